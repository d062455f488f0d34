"""A study's settings as one typed value, and the named samplers and pruners.

study.py maps its flags onto `SearchConfig` in one place; nothing below it knows argparse. The
tables here also feed argparse's `choices`, so a name works on the command line exactly when the
library knows it.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

import optuna

from space.recipe import ConfigError
from space.searchspace import SearchSpace
from space.target import EPOCH_LIMIT, MAX_PARAMS, last_k_for
from storage.records import StudySettings


def _tpe(seed: int):
    # constant_liar: running trials count as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=8)


SAMPLERS = {
    "tpe": _tpe,
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}

JUDGED_FROM = 2  # the first epoch the median pruner judges (below, PRUNERS, says why)

def is_start_point(trial, trials: dict) -> bool:
    """Whether a trial is an enqueued start point (the prior's, --warm-start's, --enqueue's, model6):
    Optuna marks an enqueued trial's system attrs with "fixed_params"; a retry of a stopped trial
    (search.runner.retry_stopped_trials) is one when the first trial of its chain was."""
    first = trials.get(trial.system_attrs.get("failed_trial"), trial)
    return "fixed_params" in trial.system_attrs or "fixed_params" in first.system_attrs


class _DrawsOnly:
    """What Optuna's percentile pruner reads of a study (its direction, its complete trials), with
    the start points left out."""

    def __init__(self, study: optuna.Study, trials: dict):
        self.direction = study.direction
        self._draws = [t for t in trials.values() if not is_start_point(t, trials)]

    def get_trials(self, deepcopy: bool = False, states=None) -> list:
        return [t for t in self._draws if states is None or t.state in states]


class DrawsMedianPruner(optuna.pruners.BasePruner):
    """Optuna's MedianPruner among the sampler's own draws: start points are never judged and never
    part of the median. A drawn trial is cut at epoch k (from `n_warmup_steps`) when its best score
    so far is below the median of the complete *draws'* scores at epoch k, once `n_startup_trials`
    draws are complete: Optuna's own rule (optuna.pruners.MedianPruner.prune runs, on a view of the
    study without the start points), so with no start point it decides as "median" does. Why:
    strong start points set a median that TPE's first draws cannot pass at epoch 2 (find-3400: 29 of
    35 draws cut there, one draw completed, so TPE learnt little). The replay of both rules on the
    committed studies' curves is in experiments/proxy/README.md.

    >>> import optuna
    >>> def objective(trial):
    ...     x = trial.suggest_float("x", 0, 1)
    ...     for step in (1, 2, 3):
    ...         trial.report(x * step, step)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return x
    >>> def states(pruner):
    ...     study = optuna.create_study(direction="maximize", pruner=pruner,
    ...                                 sampler=optuna.samplers.RandomSampler(seed=1))
    ...     study.enqueue_trial({"x": 1.0})  # a strong start point
    ...     study.optimize(objective, n_trials=5)
    ...     return [t.state.name[0] for t in study.trials]
    >>> states(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2))  # the start point cuts every draw
    ['C', 'P', 'P', 'P', 'P']
    >>> states(DrawsMedianPruner(n_startup_trials=1))  # draws judged among draws
    ['C', 'C', 'C', 'P', 'P']
    """

    def __init__(self, *, n_startup_trials: int = 4, n_warmup_steps: int = JUDGED_FROM):
        self._median = optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if is_start_point(trial, trials):
            return False
        return self._median.prune(_DrawsOnly(study, trials), trial)


PRUNERS = {
    # Judged from epoch JUDGED_FROM (Optuna judges steps >= n_warmup_steps; a trial's steps are its
    # epochs, from 1). Replayed with Optuna's rule on the stored curves of every committed study
    # (experiments/proxy/pruner-replay-2026-12-01.txt: 3,220 search epochs, 46 top-3 complete trials),
    # the median rule judged from epoch 2 runs 14 % fewer search epochs than from epoch 4 (2,541
    # against 2,970) and cuts no more of the studies' top-3 trials (4 against 4) nor bests (0 against
    # 1); from epoch 1 saves 17 % more but cuts twice the top-3 trials (8). (The first replay, which
    # compared a trial's score at the epoch rather than its best so far, said the same: 2,229 against
    # 2,635 epochs, 7 against 7 top-3 trials.) Epoch 3 was judged once by mistake (n_warmup_steps=3
    # with a comment promising 1-3): that and the lessons of results/find-5k-v2.db are in docs/studies.md.
    "median": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=JUDGED_FROM),
    "median-draws": lambda epochs: DrawsMedianPruner(n_startup_trials=4, n_warmup_steps=JUDGED_FROM),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=2, max_resource=epochs,
                                                               reduction_factor=3),
    "asha": lambda epochs: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}


def pruner_judges(epoch: int, *, epochs: int, k: int) -> bool:
    """Whether the pruner is asked about this epoch: not inside the last K epochs, the ones the score
    is the minimum of. By then at least (epochs - K) / epochs of the trial's cost is spent (80 % of a
    15-epoch trial) and two more epochs give its real score. Of the committed studies' pruned trials
    (results/*.db, 2026-11-30), 9 were cut at epochs 13-15: find-8k-lin's trials 23 and 25 at 99.33,
    find-3400's trial 22 at 99.27 over a bar of 99.25, find-5k-gpu's trial 20 after its last epoch;
    letting such trials finish costs at most K - 1 epochs each. Every epoch is still reported, so
    the stored curves stay whole."""
    return epoch <= epochs - k


OBJECTIVES = ("consistency", "pareto")  # pareto: (consistency up, params down); cannot be pruned


def check_counts(**values) -> None:
    """Each given value must be None or a positive integer (not a bool): one ConfigError naming its flag."""
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")


# What a trial's score means: fixed when a study is made (with the space, compared apart). A resume
# that leaves them out uses the study's; one that gives another value is refused (check_protocol).
PROTOCOL = ("max_params", "epochs", "last_k", "train_limit", "objective")
# How the search runs: stored too (worker reads them), taken from the study when left out, and a
# resume may change them (the header says what is in force). --workers and --timeout are not stored.
FREE = ("n_trials", "pruner", "sampler", "seed")
NONE_IS_A_VALUE = ("train_limit",)  # stored None: every training image (not "unknown")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(name: str, value) -> str:
    return "none" if value is None else str(value)


def check_protocol(study_name: str, stored: dict, asked: dict, skip: tuple[str, ...] = ()) -> None:
    """Refuse, in one line naming every difference, a run whose protocol settings (`asked`, with
    last_k as the K in force) differ from those the study was made with (`stored`, its user
    attributes). Settings the study does not record (made by an older mnist-nas) are not compared."""
    from storage.db import StudyError
    diffs = [name for name in PROTOCOL if name not in skip and name in stored and stored[name] != asked[name]]
    if diffs:
        was = ", ".join(f"{_flag(n)} {_shown(n, stored[n])}" for n in diffs)
        now = ", ".join(f"{_flag(n)} {_shown(n, asked[n])}" for n in diffs)
        raise StudyError(f"study {study_name!r} was made with {was}; this run asks {now} (these fix what a "
                         f"trial's score means: leave them out to use the study's, or use a new --study-name)")


def make_sampler(name: str, seed: int):
    return SAMPLERS[name](seed)


def make_pruner(name: str, epochs: int):
    return PRUNERS[name](epochs)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Everything one `search` invocation is asked to do. Checked up front (ConfigError)."""
    study_name: str = "mnist-nas"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite:///studies/<study_name>.db
    space: SearchSpace = field(default_factory=SearchSpace.default)
    n_trials: int = 20  # the study's budget: finished (complete or pruned) trials, all workers and runs
    timeout: float | None = None
    workers: int = 1
    max_params: int = MAX_PARAMS
    epochs: int = EPOCH_LIMIT
    last_k: int | None = None  # None: the target's K, or fewer when fewer epochs run
    pruner: str = "median"
    sampler: str = "tpe"
    objective: str = "consistency"
    seed: int = 0
    train_limit: int | None = None
    enqueue: bool = True  # a new study's first trial is the seed's model6, if the space holds it and it fits the budget
    start_points: tuple[dict, ...] = ()  # points (parameter -> value) run first, unless already in the study
    # A new study starts from the service's prior (search/prior.py: the shipped models' designs and
    # recipes scaled to the budget) and from the best trials of these earlier studies (storage URLs,
    # 'URL' for every study in it or 'URL#name'); warm_start False runs cold
    warm_start: bool = True
    warm_from: tuple[str, ...] = ()
    data_dir: str | None = None
    # settings this run took from the existing study because its command line left them out (for
    # the header line; see resolve)
    taken_from_study: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        for name in ("n_trials", "workers", "max_params", "epochs"):  # required: None is not a count
            if getattr(self, name) is None:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got None")
        check_counts(n_trials=self.n_trials, workers=self.workers, max_params=self.max_params, epochs=self.epochs,
                     last_k=self.last_k, train_limit=self.train_limit)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout!r}")
        if self.epochs > EPOCH_LIMIT:
            raise ConfigError(f"{self.epochs} epochs is over the limit of {EPOCH_LIMIT}")
        if self.last_k is not None and self.last_k > self.epochs:
            raise ConfigError(f"--last-k must be between 1 and --epochs ({self.epochs}), got {self.last_k}")
        for name, table in (("pruner", PRUNERS), ("sampler", SAMPLERS), ("objective", OBJECTIVES)):
            if getattr(self, name) not in table:
                raise ConfigError(f"--{name} must be one of {', '.join(table)}, got {getattr(self, name)!r}")
        from storage.db import check_study_name
        check_study_name(self.study_name)  # the one check: a name never becomes a path outside studies/
        if self.storage is not None and not self.storage.strip():
            raise ConfigError("--storage must not be empty (leave it out for the default SQLite file)")
        for i, point in enumerate(self.start_points, 1):
            self._check_point(i, point)

    def _check_point(self, i: int, point) -> None:
        """A start point must be a point of the space, under the budget: refused before any study exists."""
        if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
            raise ConfigError(f"--enqueue point {i}: must be an object of parameter: value, got {point!r:.60}")
        why = self.space.outside(point)
        if why:
            more = f" (and {len(why) - 2} more)" if len(why) > 2 else ""
            raise ConfigError(f"--enqueue point {i} is not a point of the space: {'; '.join(why[:2])}{more}")
        n = self.space.params_of(point)
        if n >= self.max_params:
            raise ConfigError(f"--enqueue point {i} has {n:,} parameters: not under "
                              f"--max-params {self.max_params:,}")

    @property
    def k(self) -> int:
        return last_k_for(self.epochs, self.last_k)

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"

    @property
    def prune(self) -> bool:
        return not self.pareto and self.pruner != "none"  # Optuna cannot prune multi-objective trials

    def stored_settings(self) -> StudySettings:
        """What the study keeps as user attributes (the space is stored beside it, when the study is
        made: a resume never rewrites it)."""
        return StudySettings({"max_params": self.max_params, "epochs": self.epochs, "last_k": self.k,
                "objective": self.objective, "pareto": self.pareto, "prune": self.prune,
                "pruner": self.pruner, "sampler": self.sampler, "n_trials": self.n_trials,
                "seed": self.seed, "train_limit": self.train_limit})

    def protocol(self) -> dict:
        """The settings that define what a trial's score means, as the study stores them (the space
        is compared apart, by space_diff)."""
        return {"max_params": self.max_params, "epochs": self.epochs, "last_k": self.k,
                "train_limit": self.train_limit, "objective": self.objective}

    def header(self) -> str:
        """What is in force for this run, in two lines: the study's protocol (fixed when it was made)
        and the settings a run may change; which of them came from the study, not the command line."""
        limit = f"the first {self.train_limit:,} training images" if self.train_limit else "all training images"
        taken = [_flag(name) for name in self.taken_from_study]
        return (f"protocol (fixed when the study was made): fewer than {self.max_params:,} params, "
                f"{self.epochs} epochs, score = min validation accuracy of the last {self.k}, {limit} of the "
                f"search split, objective {self.objective}\n"
                f"this run: --n-trials {self.n_trials}, --workers {self.workers}, --pruner {self.pruner}, "
                f"--sampler {self.sampler}, --seed {self.seed}, "
                + (f"--timeout {self.timeout:g} s" if self.timeout else "no --timeout")
                + (f"; from the study (not given): {' '.join(taken)}" if taken else ""))

    @classmethod
    def resolve(cls, given: dict, stored: StudySettings | None, *, defaults: dict, budget_may_differ: bool = False,
                **rest) -> "SearchConfig":
        """The config of a run from the flags it was given (`given`: name -> value, None or absent
        when the flag was left out) and the existing study's stored settings (`stored`: its user
        attributes, None for a new study). A setting left out takes the study's value, as `worker`
        does, else its default; a PROTOCOL setting given with another value than the study's is
        refused (StudyError, naming every difference) before anything is written. A flag left out
        and a flag given its default value are told apart: argparse's defaults are None."""
        stored = stored if stored is not None and stored.ours else None
        values, taken = {}, []
        for name in PROTOCOL + FREE:
            if given.get(name) is not None:
                values[name] = given[name]
            elif stored is not None and name in stored and (stored[name] is not None or name in NONE_IS_A_VALUE):
                values[name] = stored[name]
                taken.append(name)
            else:
                values[name] = defaults.get(name, _FIELD_DEFAULTS.get(name))
        if given.get("space") is not None:
            space = given["space"]
        elif stored is not None:
            space = SearchSpace.from_dict(stored.space)
            taken.append("space")
        else:
            space = SearchSpace.default()
        if stored is not None:
            asked = {**values, "last_k": last_k_for(values["epochs"], values["last_k"])}
            check_protocol(rest.get("study_name", "mnist-nas"), stored, asked,
                           skip=("max_params",) if budget_may_differ else ())
        return cls(space=space, **values, **rest, taken_from_study=tuple(taken))

    @classmethod
    def from_study(cls, attrs: StudySettings, **overrides) -> "SearchConfig":
        """The settings a study was created with (for `worker`, which joins it from anywhere)."""
        if not attrs.ours:
            raise ConfigError("this study holds no mnist-nas settings; create it with `search` first")
        kw = dict(space=SearchSpace.from_dict(attrs.space), max_params=attrs.max_params,
                  epochs=attrs["epochs"], last_k=attrs.get("last_k"), objective=attrs.get("objective", "consistency"),
                  pruner=attrs.get("pruner", "median"), sampler=attrs.get("sampler", "tpe"),
                  n_trials=attrs.get("n_trials", 20), seed=attrs.get("seed", 0),
                  train_limit=attrs.train_limit, enqueue=False)
        return cls(**{**kw, **overrides})


_FIELD_DEFAULTS = {f.name: f.default for f in fields(SearchConfig) if f.default is not MISSING}
