"""The objective one trial runs: draw (spec, recipe) from the study's space, check the budget, train.

What may be drawn is `space.searchspace.SearchSpace` (data, stored in the study); this file only
runs a draw. A draw the space cannot build, or one over the budget, is pruned at once with its
reason in the trial's user attribute "ended", before any tensor is allocated.
"""
from __future__ import annotations

import dataclasses

import optuna

from space.rf import head_receptive_field
from space.searchspace import SpaceError
from space.spec import count_params
from search import stopping
from search.config import SearchConfig, pruner_judges
from search.device import describe, resolve
from storage import notes
from storage.provenance import training_record
from storage.records import set_trial_attrs


class BudgetRefused(optuna.TrialPruned):
    pass


class CannotBuild(optuna.TrialPruned):
    pass


def make_objective(config: SearchConfig, split, artifacts=None, log=print, threads: int = 1, progress=None):
    """Return objective(trial). artifacts: storage.artifacts.ArtifactSink or None; progress: a
    TrialBar (a worker's bar on a terminal) or None."""
    from search.train import train
    device = describe(resolve())  # one worker, one device: what each trial records

    def objective(trial: optuna.Trial):
        try:
            spec, recipe = config.space.sample(trial, max_params=config.max_params, name=f"trial{trial.number}")
        except SpaceError as e:
            set_trial_attrs(trial, ended=f"cannot build: {e}")
            notes.save_trial_note(trial, f"# Trial {trial.number}\n\n**Ended:** cannot build: {e}\n")
            log(f"trial {trial.number}: cannot build: {e}")
            raise CannotBuild() from None
        cfg = dataclasses.replace(recipe, epochs=config.epochs, seed=trial.number, threads=threads)
        params = count_params(spec)
        set_trial_attrs(trial, spec=spec.to_dict(), params=params, head_rf=head_receptive_field(spec),
                        config=cfg.to_dict())
        if params >= config.max_params:
            why = f"over budget: {params} >= {config.max_params}"
            set_trial_attrs(trial, ended=why)
            notes.save_trial_note(trial, notes.short_note(number=trial.number, params=params,
                                                          max_params=config.max_params, ended=why + " (refused before "
                                                          "anything was built)", spec=spec))
            log(f"trial {trial.number}: refused, {params:,} params >= {config.max_params:,}")
            raise BudgetRefused()
        history = []

        def on_epoch(rec: dict):
            history.append(rec)
            set_trial_attrs(trial, epochs=history, seconds_per_epoch=sum(h["seconds"] for h in history) / len(history))
            log(f"trial {trial.number} ({params:,} params) epoch {rec['epoch']:2d}: "
                f"val {rec['val_acc']:.2f}  train {rec['train_acc']:.2f}  lr {rec['lr']:.3g}  {rec['seconds']:.1f}s")
            if config.prune:
                trial.report(rec["val_acc"], rec["epoch"])
                if pruner_judges(rec["epoch"], epochs=config.epochs, k=config.k) and trial.should_prune():
                    why = f"pruned after epoch {rec['epoch']} (val {rec['val_acc']:.2f})"
                    set_trial_attrs(trial, ended=why)
                    notes.save_trial_note(trial, notes.pruned_note(
                        number=trial.number, params=params, max_params=config.max_params, ended=why, spec=spec,
                        history=history))
                    log(f"trial {trial.number}: {why}")
                    raise optuna.TrialPruned()

        if progress is not None:
            progress.trial = trial.number
        set_trial_attrs(trial, device=device)  # pruned trials too: where its epochs ran
        run = training_record(final=False, train_limit=config.train_limit, epochs=config.epochs, seeds=[trial.number],
                              devices=device, images=len(split.train_labels), available=split.available)
        set_trial_attrs(trial, provenance=run)  # what it trains on and what made it, from the facts
        try:
            result = train(spec, cfg, split, on_epoch=on_epoch, quiet=True, progress=progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM, at a batch boundary (search.stopping): no write is open
            why = (f"stopped by {stopping.cause()} after {len(history)} of {cfg.epochs} epochs; "
                   f"retried with the same parameters on the next resume")
            set_trial_attrs(trial, stopped=stopping.cause(), ended=why)
            log(f"trial {trial.number}: {why}")
            raise  # Optuna marks the trial FAIL; the next search or find on the study enqueues its retry

        k = min(config.k, len(history))
        score = result.last_k_min(k)
        set_trial_attrs(trial, last_k=[h["val_acc"] for h in history[-k:]])
        ended = f"completed {len(history)} epochs; consistency score {score:.2f} (min val acc of the last {k})"
        set_trial_attrs(trial, ended=f"completed {len(history)} epochs")
        curves = None
        if artifacts is not None:
            artifacts.save_weights(trial, result)
            curves = notes.upload_curves(trial, artifacts.store, history)
        notes.save_trial_note(trial, notes.trial_note(
            number=trial.number, spec=spec, params=params, max_params=config.max_params, recipe=cfg.to_dict(),
            history=history, ended=ended, curves_url=curves, trained_on=run.text))
        log(f"trial {trial.number}: done, consistency score {score:.2f} ({params:,} params)")
        return (score, params) if config.pareto else score

    return objective
