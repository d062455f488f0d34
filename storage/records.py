"""One typed record of a study: what mnist-nas stores beyond Optuna's own fields, each as a
dataclass with its stored form (to_stored / from_stored), and every key name spelled here once.

Who writes and who reads each (find: search/find.py; a trial's record: its user attributes):

| key                       | dataclass   | written by                   | read by                               |
|---------------------------|-------------|------------------------------|---------------------------------------|
| find:confirm:<trial>      | ConfirmRow  | find, confirm stage          | find (resume), report, front, export  |
| find:partial:confirm:<t>  | PartialRow  | find, each confirm seed      | find (resume)                         |
| find:verify:<trial>       | VerifyRow   | find, verify stage           | find, report, front, export, verify   |
| find:partial:verify:<t>   | PartialRow  | find, each verify seed       | find (resume)                         |
| find:tests_used           | TestsUsed   | find, before a test is met   | find, report, export (file and card)  |
| find:rejudged             | Rejudged    | find --rejudge               | find, report, export (test-set uses)  |
| find:winner               | Winner      | find, verify stage           | find, report, export --verified       |
| find:candidates           | Candidates  | find, confirm stage          | people and tests                      |
| find:searched             | Searched    | find, search stage           | find (a finished search is read)      |
| verify:<trial>:<started>  | VerifyCommandRun | `verify` (the command), | report, find, export (test-set   |
|                           |             |                              |   uses, candidates that met it)       |
|                           |             |   before each seed batch     |                                       |
| prior                     | Prior       | search/runner.py, new study  | report, the study note (notes.py)     |
| space and the settings    | StudySettings | search/runner.py (from   | search/config.py (resume, worker),    |
|   (one attribute each)    |             |   SearchConfig.stored_...)   |   report, notes, plots, export, prior |
| a trial's spec, params,   | TrialRecord | search/objective.py, runner  | report, ranking, plots, notes, export,|
|   config, epochs, ended...|             |   (start_point), artifacts,  |   find, verify, runner (retries),     |
|                           |             |   notes (curves), scale      |   search/prior.py (--warm-start)      |
| a weights file (.pt)      | WeightsFile | search/retrain.py (verify    | export, export --verified (loaded     |
|                           |             |   seeds), artifacts (trials) |   weights-only: never runs code)      |

The settings a study keeps (max_params, epochs, last_k, ...: SETTINGS) and its "space" are read
and written through StudySettings; what they mean (the protocol, the defaults, the checks) is
search/config.py's. settings_attrs / find_attrs tell them apart from what `find` stored.

Stored forms are what the code wrote before this module existed, so every committed study reads as
it did: a row's keys in their stored order, keys this version does not know kept in `extra` and
written back, a field stored as null kept as null. Seeds are ints in the dataclasses and strings in
the stored form (JSON object keys): converted here, at the boundary.

A verify row (VerifyRow) holds the test accuracies per epoch of every seed that met the test set and
the verdict on them. Rows made before "held means held" (no `hold` field) were judged by the old
rule, every seed at or above the target; they read as they were stored, and `find` judges them again
by the new rule (space.hold) when it meets them.

>>> row = VerifyRow.from_stored({"trial": 3, "epochs": 2, "k": 1, "target": 99.0, "seeds": 1,
...                              "results": {"1": [98.0, 99.5]}, "passed": True})
>>> row.results, row.minima(), row.verdict
({1: [98.0, 99.5]}, [99.5], 'PASS')
>>> row.to_stored()["results"]
{'1': [98.0, 99.5]}
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from space.hold import Decision, decide, last_k_minimum
from storage.db import StudyError

FIND = "find:"  # every key `find` writes starts with it
CONFIRM = "find:confirm:"
PARTIAL_CONFIRM = "find:partial:confirm:"
VERIFY = "find:verify:"
PARTIAL_VERIFY = "find:partial:verify:"
TESTS_USED = "find:tests_used"  # trial numbers of the candidates find let meet the test set
REJUDGED = "find:rejudged"  # stored test runs judged again at another target / K: each a test-set use
WINNER = "find:winner"
CANDIDATES = "find:candidates"  # the confirm stage's order: best seed-robust score first
SEARCHED = "find:searched"  # the --n-trials the search stage reached (or was stopped at by --timeout)
VERIFY_COMMAND = "verify:"  # one row per run of the `verify` command: its seeds met the test set
PRIOR = "prior"  # where a study's start points came from (search/runner.py)
SPACE = "space"  # the study's search space (space.searchspace.SearchSpace.to_dict)
# the settings a study keeps, one user attribute each (search.config.SearchConfig.stored_settings)
SETTINGS = ("max_params", "epochs", "last_k", "objective", "pareto", "prune", "pruner", "sampler", "n_trials", "seed",
            "train_limit")
STAGES = ("confirm", "verify")


class RecordError(StudyError, ValueError):
    """A stored value is not the record its key names (damaged, or written by hand): one line."""


def typed_seeds(stored: dict) -> dict[int, Any]:
    """{"1": x} as stored (JSON object keys are strings) -> {1: x}, in the stored order."""
    return {int(k): v for k, v in stored.items()}


def stored_seeds(typed: dict) -> dict[str, Any]:
    """{1: x} -> {"1": x}, the stored form, in the given order."""
    return {str(k): v for k, v in typed.items()}


def _codec(decode, encode) -> dict:
    return {"decode": decode, "encode": encode}


SEEDS = _codec(typed_seeds, stored_seeds)


def _seed_list(v) -> list[int]:
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise ValueError(f"expected a list of seeds, got {v!r}")
    return list(v)


SEED_LIST = _codec(_seed_list, list)  # seeds that met the test set: a damaged list must not be counted


def _list_of(cls) -> dict:
    return _codec(lambda v: [cls.from_stored(x) for x in v], lambda v: [x.to_stored() for x in v])


def _one(cls) -> dict:
    return _codec(cls.from_stored, lambda v: v.to_stored())


@dataclass(frozen=True, kw_only=True)
class Stored:
    """Base of every record: to_stored / from_stored by the dataclass fields (their names are the
    stored keys, but for STORED_NAMES), a field's codec in its metadata. A field without a default
    must be stored; one defaulting to None is optional (absent when None, unless it was stored as
    null). `extra`: stored keys this version does not know, written back as they were; `order`: the
    stored key order, kept on writing back."""
    STORED_NAMES: ClassVar[dict[str, str]] = {}

    extra: dict = field(default_factory=dict, repr=False)
    order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def _fields(cls):
        return [f for f in fields(cls) if f.name not in ("extra", "order")]

    @classmethod
    def from_stored(cls, stored: dict, **context):
        """The record of a stored dict. context: fields that are not stored (a partial row's stage
        and trial, which its key names)."""
        if not isinstance(stored, dict):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(stored).__name__}")
        kw, known = dict(context), set()
        for f in cls._fields():
            if f.name in context:
                continue
            key = cls.STORED_NAMES.get(f.name, f.name)
            known.add(key)
            if key in stored:
                value, decode = stored[key], f.metadata.get("decode")
                try:
                    kw[f.name] = decode(value) if decode and value is not None else value
                except (AttributeError, KeyError, TypeError, ValueError) as e:
                    raise RecordError(f"{cls.__name__}: {key!r} is not what it should be ({e})") from None
            elif f.default is MISSING and f.default_factory is MISSING:
                raise RecordError(f"{cls.__name__}: no {key!r}")
        return cls(**kw, extra={k: v for k, v in stored.items() if k not in known}, order=tuple(stored))

    def to_stored(self) -> dict:
        out = {}
        for f in self._fields():
            if f.metadata.get("stored") is False:
                continue
            key, value = self.STORED_NAMES.get(f.name, f.name), getattr(self, f.name)
            if value is None and f.default is None and key not in self.order:
                continue  # optional and absent
            encode = f.metadata.get("encode")
            out[key] = encode(value) if encode and value is not None else value
        out.update(self.extra)
        kept = [k for k in self.order if k in out]
        return {**{k: out[k] for k in kept}, **{k: v for k, v in out.items() if k not in kept}}

    def replace(self, **changes):
        """A copy with `changes` (dataclasses.replace), its stored order kept: new keys follow."""
        return dataclasses.replace(self, **changes)


def _context(**kw) -> Any:
    """A field that is not stored (its key names it)."""
    return field(metadata={"stored": False}, **kw)


# --- pieces of rows -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Provenance(Stored):
    """storage.provenance.training_record: what a training run trained on and what made it."""
    trained_on: str | None = None
    images: int | None = None
    available: int | None = None
    final: bool | None = None
    train_limit: int | None = None
    epochs: int | None = None
    seeds: list[int] | None = None
    devices: dict[int, str] | None = field(default=None, metadata=SEEDS)
    made_by: dict | None = None  # versions: mnist-nas, commit, modified, torch, optuna
    text: str | None = None  # trained_on, and who made it, in one sentence


@dataclass(frozen=True, kw_only=True)
class HoldEstimate(Stored):
    """The hold rule's verdict on a verify row's seeds (space.hold.Decision as stored)."""
    verdict: str  # PASS, FAIL or MORE
    hold_probability: float  # P(a new seed holds the target), rounded to 4 places
    seeds: int
    level: float  # PASS needs hold_probability >= level
    method: str
    why: str

    @classmethod
    def of(cls, decision: Decision) -> "HoldEstimate":
        return cls.from_stored(decision.to_dict())


@dataclass(frozen=True, kw_only=True)
class Rejudgement(Stored):
    """One entry of a verify row's verdict history: the rule it was judged by before --rejudge."""
    target: float
    k: int
    verdict: str
    at: str  # when it was judged again (UTC, ISO 8601)


@dataclass(frozen=True, kw_only=True)
class RaceStop(Stored):
    """Why the confirm race stopped a candidate (search/race.py) and the seeds it did not run."""
    why: str
    bar: float
    seeds_not_run: list[int]


# --- rows of find's stages ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SeedRuns(Stored):
    """What a stage did for one trial, read from any of its rows (full or partial, of any age): the
    view `find` resumes from and `report` costs. Not written: the rows are."""
    epochs: int | None = None
    k: int | None = None
    results: dict[int, list[float]] = field(metadata=SEEDS)  # seed -> accuracy per epoch
    core_seconds: float | None = None  # training seconds of every seed (one thread each)
    devices: dict[int, str] | None = field(default=None, metadata=SEEDS)
    finished: str | None = None
    provenance: Provenance | None = field(default=None, metadata=_one(Provenance))
    met: list[int] | None = field(default=None, metadata=SEED_LIST)  # verify, partial row: every seed started
    # verify, full row: seeds that met the test set and did not finish (a confirm row's `stopped` is
    # the race's reason, a RaceStop: any row kind reads here, so seeds_met checks it is seeds)
    stopped: Any = None

    @property
    def test_seeds(self) -> int:
        """Verify: the seeds that met the test set, finished or stopped midway (each a use)."""
        return len(seeds_met(self))


def seeds_met(row) -> set[int]:
    """The verify seeds a row records as having met the test set: its finished ones and those it
    lists as started (a PartialRow's `met`) or stopped midway (a VerifyRow's `stopped`); any row
    kind, SeedRuns included."""
    try:
        stopped = _seed_list(getattr(row, "stopped", None) or [])
    except ValueError:  # not seeds: a confirm row's race stop, or a damaged list (never its characters counted)
        stopped = []
    return set(row.results) | set(getattr(row, "met", None) or ()) | set(stopped)


@dataclass(frozen=True, kw_only=True)
class PartialRow(Stored):
    """The seeds of an unfinished stage, stored one by one as each ends, so a stopped `find` resumes
    with only the missing seeds ("find:partial:<stage>:<trial>")."""
    stage: str = _context()  # "confirm" or "verify"
    trial: int = _context()
    epochs: int
    k: int
    target: float | None = None  # verify only
    seeds: int | None = None  # verify only: --seeds
    results: dict[int, list[float]] = field(metadata=SEEDS)
    core_seconds: float | None = None
    devices: dict[int, str] | None = field(default=None, metadata=SEEDS)
    # verify only: every seed that has started, so has met the test set (scored from its first
    # epoch), finished or not: a seed stopped midway is a test-set use too
    met: list[int] | None = field(default=None, metadata=SEED_LIST)

    @property
    def key(self) -> str:
        return partial_key(self.stage, self.trial)


@dataclass(frozen=True, kw_only=True)
class ConfirmRow(Stored):
    """A candidate retrained on validation with further seeds ("find:confirm:<trial>"). scores: its
    search score, then one consistency score per confirm seed; robust: their minimum."""
    trial: int
    params: int
    epochs: int
    k: int
    results: dict[int, list[float]] = field(metadata=SEEDS)
    scores: list[float]
    robust: float
    core_seconds: float | None = None  # rows made before costs were recorded: None
    devices: dict[int, str] | None = field(default=None, metadata=SEEDS)
    stopped: RaceStop | None = field(default=None, metadata=_one(RaceStop))
    finished: str | None = None
    provenance: Provenance | None = field(default=None, metadata=_one(Provenance))

    @property
    def key(self) -> str:
        return CONFIRM + str(self.trial)


@dataclass(frozen=True, kw_only=True)
class VerifyRow(Stored):
    """A candidate retrained on all training images, the test set scored every epoch, and the
    verdict ("find:verify:<trial>"). hold: the hold rule's estimate (None: judged before it, by the
    every-seed rule); rejudged: its verdict history when --rejudge judged it again."""
    trial: int
    epochs: int
    k: int
    target: float
    seeds: int  # --seeds: at least this many
    max_seeds: int | None = None
    results: dict[int, list[float]] = field(metadata=SEEDS)
    passed: bool
    hold: HoldEstimate | None = field(default=None, metadata=_one(HoldEstimate))
    trained_on: str | None = None
    core_seconds: float | None = None
    devices: dict[int, str] | None = field(default=None, metadata=SEEDS)
    finished: str | None = None
    provenance: Provenance | None = field(default=None, metadata=_one(Provenance))
    rejudged: list[Rejudgement] | None = field(default=None, metadata=_list_of(Rejudgement))
    # seeds that met the test set and did not finish (stopped midway, then not needed for the
    # verdict): test-set uses with no result
    stopped: list[int] | None = field(default=None, metadata=SEED_LIST)

    @property
    def key(self) -> str:
        return VERIFY + str(self.trial)

    @property
    def verdict(self) -> str:
        """PASS or FAIL as the row was judged (an old row by the every-seed rule)."""
        return "PASS" if self.passed else "FAIL"

    def minima(self) -> list[float]:
        """Per-seed last-K minima, in seed order."""
        return [last_k_minimum(accs, self.k) for _, accs in sorted(self.results.items())]

    def judge(self, *, level: float, min_seeds: int, max_seeds: int) -> Decision:
        """The hold rule on the stored seeds (nothing is trained)."""
        return decide(self.minima(), target=self.target, level=level, min_seeds=min_seeds, max_seeds=max_seeds)

    def describe_hold(self) -> str:
        """One line: the verdict and what it rests on."""
        minima = self.minima()
        seeds = f"{len(minima)} seeds, last-{self.k} minima {' / '.join(f'{m:.2f}' for m in minima)}"
        if self.hold is None:
            return (f"{self.verdict} by the every-seed rule ({seeds}); no hold estimate: judged before "
                    "'held means held'")
        rejudged = f"; re-judged from target {self.rejudged[-1].target}" if self.rejudged else ""
        return (f"{self.hold.verdict}: P(a new seed holds >= {self.target} %) = {self.hold.hold_probability:.1%} "
                f"(level {self.hold.level:.0%}; {seeds}){rejudged}")


# --- study-wide events ----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class RejudgeEvent(Stored):
    """One --rejudge: a trial's stored test runs judged again at another rule (a test-set use)."""
    STORED_NAMES: ClassVar[dict[str, str]] = {"from_": "from"}
    trial: int
    from_: dict  # setting -> the value it was judged at ("target", "k", "level")
    to: dict  # setting -> the value it is judged at now
    verdict_before: str
    at: str


@dataclass(frozen=True, kw_only=True)
class VerifyCommandRun(Stored):
    """One run of the `verify` command ("verify:<trial>:<started>"), stored before each batch of its
    seeds starts: every seed in `met` was scored on the test set from its first epoch, finished or
    not, so each is a test-set use; `verdict` is written when the run ends (absent: it stopped).

    >>> run = VerifyCommandRun(trial=4, started="2026-11-30T22:00:00.000001+00:00", met=[1, 2])
    >>> run.key, run.to_stored()
    ('verify:4:2026-11-30T22:00:00.000001+00:00', {'trial': 4, 'started': '2026-11-30T22:00:00.000001+00:00', 'met': [1, 2]})
    """
    trial: int
    started: str  # UTC, ISO 8601 with microseconds: two runs of one trial get two rows
    met: list[int] = field(metadata=SEED_LIST)
    verdict: str | None = None

    def __post_init__(self):
        if self.met is None:  # stored as null: not a run's record (the codec checks any list)
            raise RecordError(f"{VERIFY_COMMAND}: 'met' is null")

    @property
    def key(self) -> str:
        return f"{VERIFY_COMMAND}{self.trial}:{self.started}"


@dataclass(frozen=True)
class Winner:
    """The trial whose verify row passed first: the model `find` exports ("find:winner")."""
    key: ClassVar[str] = WINNER
    trial: int

    def to_stored(self) -> int:
        return self.trial

    @classmethod
    def from_stored(cls, stored) -> "Winner":
        return cls(_int(stored, WINNER))


@dataclass(frozen=True)
class Searched:
    """The --n-trials the search stage reached or was stopped at ("find:searched")."""
    key: ClassVar[str] = SEARCHED
    n_trials: int

    def to_stored(self) -> int:
        return self.n_trials

    @classmethod
    def from_stored(cls, stored) -> "Searched":
        return cls(_int(stored, SEARCHED))


@dataclass(frozen=True)
class _TrialNumbers:
    """A study attribute that is a list of trial numbers (its key names which)."""
    key: ClassVar[str] = ""
    trials: tuple[int, ...] = ()

    def to_stored(self) -> list[int]:
        return list(self.trials)

    @classmethod
    def from_stored(cls, stored):
        return cls(tuple(_ints(stored, cls.key)))


@dataclass(frozen=True)
class TestsUsed(_TrialNumbers):
    """The candidates `find` let meet the test set, in the order they met it ("find:tests_used");
    each is counted before its first seed is scored. With the trials only the `verify` command
    tested: FindRecord.candidates_tested()."""
    __test__ = False  # not a pytest class
    key: ClassVar[str] = TESTS_USED


@dataclass(frozen=True)
class Candidates(_TrialNumbers):
    """The confirm stage's candidates, best seed-robust score first ("find:candidates")."""
    key: ClassVar[str] = CANDIDATES


@dataclass(frozen=True)
class Rejudged:
    """Every --rejudge of the study, in order ("find:rejudged"); each is a test-set use."""
    key: ClassVar[str] = REJUDGED
    events: tuple[RejudgeEvent, ...] = ()

    def to_stored(self) -> list[dict]:
        return [e.to_stored() for e in self.events]

    @classmethod
    def from_stored(cls, stored) -> "Rejudged":
        if not isinstance(stored, list):
            raise RecordError(f"{REJUDGED}: expected a list, got {type(stored).__name__}")
        return cls(tuple(RejudgeEvent.from_stored(e) for e in stored))


def _int(v, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError(f"{key}: expected a trial number, got {v!r}")
    return v


def _ints(v, key: str) -> list[int]:
    if not isinstance(v, list):
        raise RecordError(f"{key}: expected a list, got {type(v).__name__}")
    return [_int(x, key) for x in v]


@dataclass(frozen=True, kw_only=True)
class TestSetUses(Stored):
    """How often a study's test set was used: candidates that met it (find's and the `verify`
    command's), seeds trained and scored on it by find (each a use), stored runs judged again at
    another target (each a use), seeds the `verify` command trained on it (each a use)."""
    __test__ = False
    candidates: int
    seeds: int
    rejudged: int
    verify_command_seeds: int | None = None  # absent when none (what the stored form always was)
    total: int


@dataclass(frozen=True, kw_only=True)
class PriorPoint(Stored):
    source: str  # "under3762" (the prior) or "study find-3762 trial 19" (--warm-start)
    params: int
    scale: float


@dataclass(frozen=True, kw_only=True)
class Prior(Stored):
    """Where a new study's start points came from ("prior"): the prior's designs and --warm-start's
    studies, scaled to its budget (search/prior.py). None (absent): a study made before it, or
    --no-warm-start."""
    key: ClassVar[str] = PRIOR
    warm_from: list[str] | None = None  # the --warm-start URLs (None: not stored)
    points: list[PriorPoint] | None = field(default=None, metadata=_list_of(PriorPoint))

    @classmethod
    def read(cls, attrs: dict) -> "Prior | None":
        return cls.from_stored(attrs[PRIOR]) if PRIOR in attrs else None


# --- one trial ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TrialRecord(Stored):
    """A trial's user attributes: what it is, how it trained and how it ended. Written piece by
    piece as the trial runs (set_trial_attrs), so every field may be absent: a trial refused before
    training has no epochs, one that could not be built has only `ended`, an enqueued trial not yet
    run only `start_point`."""
    spec: dict | None = None  # space.spec.ArchSpec.to_dict
    params: int | None = None
    head_rf: int | None = None  # the head's receptive field
    config: dict | None = None  # space.recipe.TrainConfig.to_dict
    epochs: list[dict] | None = None  # per epoch: epoch, lr, train_acc, val_acc, seconds, ...
    seconds_per_epoch: float | None = None
    ended: str | None = None  # why and when it ended, in words
    device: str | None = None  # where its epochs ran
    provenance: Provenance | None = field(default=None, metadata=_one(Provenance))
    last_k: list[float] | None = None  # validation accuracy of the last K epochs (complete trials)
    weights_artifact: str | None = None  # id of its WeightsFile in the study's artifact store
    curves_artifact: str | None = None  # id of its curves PNG
    stopped: str | None = None  # "Ctrl-C" or "SIGTERM": stopped, retried on the next resume
    start_point: str | None = None  # where an enqueued start point came from (search/prior.py)

    @classmethod
    def of(cls, trial) -> "TrialRecord":
        """The record of an Optuna trial (frozen or running)."""
        return cls.from_stored(trial.user_attrs)

    @property
    def history(self) -> list[dict]:
        """The per-epoch records ([] for a trial that trained none)."""
        return self.epochs or []

    @property
    def seconds(self) -> float:
        """Its training seconds, every epoch it ran."""
        return sum(e.get("seconds", 0.0) for e in self.history)


def trial_attrs(**values) -> dict:
    """The stored form of some of a trial's fields (names: TrialRecord's), for Optuna's
    enqueue_trial(user_attrs=...); a name that is not a field is refused."""
    names = {f.name: f for f in TrialRecord._fields()}
    out = {}
    for name, value in values.items():
        if name not in names:
            raise TypeError(f"a trial record has no field {name!r}")
        encode = names[name].metadata.get("encode")
        out[name] = encode(value) if encode and value is not None and not isinstance(value, dict) else value
    return out


def set_trial_attrs(trial, **values) -> None:
    """Store some fields of a running trial's record (names: TrialRecord's)."""
    for key, value in trial_attrs(**values).items():
        trial.set_user_attr(key, value)


# --- the weights file -----------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsFile:
    """A trained model as torch.save writes it: {"spec", "config", "state_dict"}. A trial's weights
    in the study's artifact store and a verify seed's in <study>.artifacts/find/ are such files.
    Loaded weights-only: a file is never unpickled in a way that can run code."""
    spec: dict  # space.spec.ArchSpec.to_dict
    config: dict  # space.recipe.TrainConfig.to_dict
    state_dict: dict  # parameter and buffer name -> tensor

    def to_stored(self) -> dict:
        return {"spec": self.spec, "config": self.config, "state_dict": self.state_dict}

    @classmethod
    def from_stored(cls, stored) -> "WeightsFile":
        if not isinstance(stored, dict) or not {"spec", "config", "state_dict"} <= set(stored):
            raise RecordError("not a weights file: expected an object with spec, config and state_dict")
        return cls(spec=stored["spec"], config=stored["config"], state_dict=stored["state_dict"])

    def save(self, file) -> None:
        """Write to a path or a binary file object."""
        import torch
        torch.save(self.to_stored(), file)

    @classmethod
    def load(cls, file) -> "WeightsFile":
        """Read a path or a binary file object; torch's weights-only unpickler refuses anything but
        tensors and plain data (an UnpicklingError)."""
        import torch
        return cls.from_stored(torch.load(file, weights_only=True))


# --- keys and a study's find record ---------------------------------------------------------------

def confirm_key(trial: int) -> str:
    return CONFIRM + str(trial)


def verify_key(trial: int) -> str:
    return VERIFY + str(trial)


def partial_key(stage: str, trial: int) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return f"{FIND}partial:{stage}:{trial}"


_ROWS = {CONFIRM: ConfirmRow, VERIFY: VerifyRow, PARTIAL_CONFIRM: PartialRow, PARTIAL_VERIFY: PartialRow}
_SINGLE = {TESTS_USED: TestsUsed, REJUDGED: Rejudged, WINNER: Winner, CANDIDATES: Candidates,
           SEARCHED: Searched, PRIOR: Prior}


def parse(key: str, value):
    """The record a stored study attribute holds, by its key; RecordError when it is not one. A key
    this module does not own (a setting, the space) is returned as stored."""
    if key in _SINGLE:
        return _SINGLE[key].from_stored(value)
    for prefix, cls in _ROWS.items():
        if key.startswith(prefix):
            number = key[len(prefix):]
            if not number.isdigit():
                raise RecordError(f"{key}: not a trial number")
            if cls is PartialRow:
                return PartialRow.from_stored(value, stage=prefix.split(":")[2], trial=int(number))
            return cls.from_stored(value)
    return value


@dataclass(frozen=True)
class StudySettings:
    """The settings a study keeps (one user attribute each, named in SETTINGS) and its space
    (SPACE), as stored. A study made by an older mnist-nas may lack some: `stored` holds only the
    keys that are there (a stored None, as train_limit's "every image", is a value), and it reads
    like that dict (`in`, `[]`, `get`).

    >>> s = StudySettings.of({"max_params": 4000, "train_limit": None, "find:winner": 3})
    >>> s.max_params, "train_limit" in s, s.train_limit, s.ours
    (4000, True, None, False)
    """
    stored: dict

    @classmethod
    def of(cls, study_or_attrs) -> "StudySettings":
        """From a study (its user attributes) or the attributes themselves."""
        attrs = study_or_attrs if isinstance(study_or_attrs, dict) else study_or_attrs.user_attrs
        return cls({k: attrs[k] for k in (*SETTINGS, SPACE) if k in attrs})

    def __post_init__(self):
        unknown = set(self.stored) - {*SETTINGS, SPACE}
        if unknown:
            raise RecordError(f"StudySettings: not a setting: {', '.join(sorted(unknown))}")

    def __contains__(self, name: str) -> bool:
        return name in self.stored

    def __getitem__(self, name: str):
        return self.stored[name]

    def get(self, name: str, default=None):
        return self.stored.get(name, default)

    @property
    def ours(self) -> bool:
        """Made by mnist-nas's search: it has a space and a budget."""
        return SPACE in self.stored and "max_params" in self.stored

    @property
    def max_params(self) -> int | None:
        return self.stored.get("max_params")

    @property
    def train_limit(self) -> int | None:
        return self.stored.get("train_limit")

    @property
    def space(self) -> dict | None:
        return self.stored.get(SPACE)

    def save(self, study) -> None:
        for key, value in self.stored.items():
            study.set_user_attr(key, value)


def find_attrs(attrs: dict) -> dict:
    """The study attributes `find` wrote, as stored."""
    return {k: v for k, v in attrs.items() if k.startswith(FIND)}


def verify_command_attrs(attrs: dict) -> dict:
    """The study attributes the `verify` command wrote, as stored."""
    return {k: v for k, v in attrs.items() if k.startswith(VERIFY_COMMAND)}


def settings_attrs(attrs: dict) -> dict:
    """Every other study attribute: the settings, the space, the prior."""
    return {k: v for k, v in attrs.items() if not k.startswith((FIND, VERIFY_COMMAND))}


def save(study, record) -> None:
    """Store a record under its key (a row's key names its trial)."""
    study.set_user_attr(record.key, record.to_stored())


@dataclass(frozen=True)
class FindRecord:
    """What `find` stored in a study, read through the dataclasses above. A row that does not parse
    (damaged, or written by hand) reads as absent, as it always did: report skips it, export says
    the trial was not verified, find runs it again. A study-wide record that does not parse is an
    error."""
    attrs: dict  # the study's user attributes

    @classmethod
    def of(cls, study) -> "FindRecord":
        return cls(study.user_attrs)

    def _rows(self, prefix: str, cls) -> dict[int, Any]:
        out = {}
        for key, value in self.attrs.items():
            number = key[len(prefix):]
            if key.startswith(prefix) and number.isdigit():
                try:
                    out[int(number)] = cls.from_stored(value)
                except RecordError:
                    continue
        return out

    def _single(self, cls):
        """A study-wide record, None when absent. One that does not parse is an error (RecordError):
        find appends to these, and must not write a damaged one over with less."""
        return cls.from_stored(self.attrs[cls.key]) if cls.key in self.attrs else None

    def confirmed(self) -> dict[int, ConfirmRow]:
        """Every confirm row, by trial number, in stored order."""
        return self._rows(CONFIRM, ConfirmRow)

    def verified(self) -> dict[int, VerifyRow]:
        """Every verify row, by trial number, in stored order."""
        return self._rows(VERIFY, VerifyRow)

    def confirm(self, trial: int) -> ConfirmRow | None:
        return self.confirmed().get(trial)

    def verify(self, trial: int) -> VerifyRow | None:
        return self.verified().get(trial)

    def partial(self, stage: str, trial: int) -> PartialRow | None:
        value = self.attrs.get(partial_key(stage, trial))
        try:
            return None if value is None else PartialRow.from_stored(value, stage=stage, trial=trial)
        except RecordError:
            return None

    def runs(self, stage: str, trial: int | None = None, *, partial: bool = False):
        """SeedRuns of a stage's rows (the full rows, or with partial the partial ones): for one
        trial (None when there is none), or all of them by trial number."""
        prefix = partial_key(stage, 0)[:-1] if partial else {"confirm": CONFIRM, "verify": VERIFY}[stage]
        if trial is None:
            return self._rows(prefix, SeedRuns)
        value = self.attrs.get(prefix + str(trial))
        try:
            return None if value is None else SeedRuns.from_stored(value)
        except RecordError:
            return None

    @property
    def tests_used(self) -> tuple[int, ...]:
        """The candidates `find` let meet the test set, in order (what its --top caps)."""
        used = self._single(TestsUsed)
        return used.trials if used else ()

    def candidates_tested(self) -> tuple[int, ...]:
        """Every trial that met the test set in this study: find's candidates in the order they met
        it, then those only the `verify` command tested, by when their run started (each trial once)."""
        out = list(self.tests_used)
        for run in sorted(self.verify_command_runs(), key=lambda r: r.started):
            if run.met and run.trial not in out:
                out.append(run.trial)
        return tuple(out)

    @property
    def rejudged(self) -> tuple[RejudgeEvent, ...]:
        r = self._single(Rejudged)
        return r.events if r else ()

    @property
    def winner(self) -> int | None:
        w = self._single(Winner)
        return w.trial if w else None

    @property
    def candidates(self) -> tuple[int, ...] | None:
        c = self._single(Candidates)
        return c.trials if c else None

    @property
    def searched(self) -> int | None:
        s = self._single(Searched)
        return s.n_trials if s else None

    def in_progress(self, stage: str) -> dict:
        """The partial rows of a stage's trials that have no full row yet: a stage under way, or
        stopped before its row was written (a full row absorbs its partial one)."""
        full = self.runs(stage)
        return {t: r for t, r in self.runs(stage, partial=True).items() if t not in full}

    def verify_command_runs(self) -> list[VerifyCommandRun]:
        """Every run of the `verify` command on this study, in stored order (a damaged row: skipped)."""
        out = []
        for value in verify_command_attrs(self.attrs).values():
            try:
                out.append(VerifyCommandRun.from_stored(value))
            except RecordError:
                continue
        return out

    def test_set_uses(self) -> TestSetUses:
        # every verify seed that met the test set, those of a verify still under way (or stopped) too
        seeds = sum(r.test_seeds for r in [*self.runs("verify").values(), *self.in_progress("verify").values()])
        command = sum(len(set(r.met)) for r in self.verify_command_runs())
        rejudged = len(self.rejudged)
        return TestSetUses(candidates=len(self.candidates_tested()), seeds=seeds, rejudged=rejudged,
                           verify_command_seeds=command or None, total=seeds + rejudged + command)
