"""The search space (define-by-run) and the objective a trial runs.

The space keeps the seed's family: block 1 at full resolution (3x3 convs), a 1x1 squeeze and a
max-pool, block 2 (3x3 convs), global average pooling, a 1x1 head. Widths are sampled per layer
from ranges chosen so that most draws fit the budget; what does not fit is refused before anything
is built (pruned at once, reason in its user attributes).
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from space.rf import head_receptive_field
from space.spec import ArchSpec, Layer, count_params
from search.train import TrainConfig

B1_LAYERS, B2_LAYERS = (1, 3), (2, 4)
B1_WIDTH, SQUEEZE_WIDTH, B2_WIDTH = (4, 16), (6, 16), (8, 20)  # ~20% over budget at random

# The seed's model6 in this space's parameter names: enqueued as a new study's first trial.
MODEL6_PARAMS = {
    "b1_layers": 2, "b1_w0": 8, "b1_w1": 15, "squeeze_w": 10,
    "b2_layers": 4, "b2_w0": 10, "b2_w1": 12, "b2_w2": 14, "b2_w3": 18,
    "dropout": 0.05, "rotation": 7.0, "step_size": 6, "gamma": 0.1, "lr": 0.05, "batch_size": 64,
}


def suggest_spec(trial: optuna.Trial) -> ArchSpec:
    layers = []
    for i in range(trial.suggest_int("b1_layers", *B1_LAYERS)):
        layers.append(Layer("conv", trial.suggest_int(f"b1_w{i}", *B1_WIDTH)))
    layers.append(Layer("conv", trial.suggest_int("squeeze_w", *SQUEEZE_WIDTH), kernel=1))
    layers.append(Layer("maxpool"))
    for i in range(trial.suggest_int("b2_layers", *B2_LAYERS)):
        layers.append(Layer("conv", trial.suggest_int(f"b2_w{i}", *B2_WIDTH)))
    layers += [Layer("gap"), Layer("head", 10, kernel=1)]
    return ArchSpec(tuple(layers), batchnorm=True, name=f"trial{trial.number}")


def smallest_spec() -> ArchSpec:
    """The smallest model the space can sample: a budget at or below its count admits nothing."""
    layers = [Layer("conv", B1_WIDTH[0]) for _ in range(B1_LAYERS[0])]
    layers += [Layer("conv", SQUEEZE_WIDTH[0], kernel=1), Layer("maxpool")]
    layers += [Layer("conv", B2_WIDTH[0]) for _ in range(B2_LAYERS[0])]
    return ArchSpec(tuple(layers + [Layer("gap"), Layer("head", 10, kernel=1)]), batchnorm=True)


def suggest_config(trial: optuna.Trial, epochs: int, threads: int = 1) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        dropout=trial.suggest_float("dropout", 0.0, 0.15, step=0.01),
        rotation=trial.suggest_float("rotation", 0.0, 15.0, step=1.0),
        step_size=trial.suggest_int("step_size", 3, 15),
        gamma=trial.suggest_float("gamma", 0.05, 0.5, log=True),
        lr=trial.suggest_float("lr", 0.01, 0.2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [64, 128, 256]),
        seed=trial.number,
        threads=threads,
    )


@dataclass
class SearchSettings:
    max_params: int = 8000
    epochs: int = 15
    last_k: int = 3
    pareto: bool = False
    prune: bool = True


class BudgetRefused(optuna.TrialPruned):
    pass


def make_objective(settings: SearchSettings, split, artifacts=None, log=print):
    """Return objective(trial). artifacts: storage.studies.ArtifactSink or None."""
    from search.train import train

    def objective(trial: optuna.Trial):
        spec = suggest_spec(trial)
        cfg = suggest_config(trial, settings.epochs)
        params = count_params(spec)
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("params", params)
        trial.set_user_attr("head_rf", head_receptive_field(spec))
        trial.set_user_attr("config", cfg.to_dict())
        if params >= settings.max_params:
            trial.set_user_attr("ended", f"over budget: {params} >= {settings.max_params}")
            log(f"trial {trial.number}: refused, {params:,} params >= {settings.max_params:,}")
            raise BudgetRefused()
        history = []

        def on_epoch(rec: dict):
            history.append(rec)
            trial.set_user_attr("epochs", history)
            trial.set_user_attr("seconds_per_epoch", sum(h["seconds"] for h in history) / len(history))
            log(f"trial {trial.number} ({params:,} params) epoch {rec['epoch']:2d}: "
                f"val {rec['val_acc']:.2f}  train {rec['train_acc']:.2f}  {rec['seconds']:.1f}s")
            if settings.prune:
                trial.report(rec["val_acc"], rec["epoch"])
                if trial.should_prune():
                    why = f"pruned after epoch {rec['epoch']} (val {rec['val_acc']:.2f})"
                    trial.set_user_attr("ended", why)
                    log(f"trial {trial.number}: {why}")
                    raise optuna.TrialPruned()

        result = train(spec, cfg, split, on_epoch=on_epoch, quiet=True)
        k = min(settings.last_k, len(history))
        score = result.last_k_min(k)
        trial.set_user_attr("last_k", [h["val_acc"] for h in history[-k:]])
        trial.set_user_attr("ended", f"completed {len(history)} epochs")
        if artifacts is not None:
            artifacts.save_weights(trial, result)
        log(f"trial {trial.number}: done, consistency score {score:.2f} ({params:,} params)")
        return (score, params) if settings.pareto else score

    return objective
