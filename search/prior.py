"""The service's prior: what earlier studies learnt, as start points scaled to a new study's budget.

search/prior.json holds one entry per shipped model (written by experiments/prior/make.py): its
design and recipe as a complete point. For a new study, each entry whose family the study's space
can build is scaled to the budget: every width multiplied by one factor, the largest whose model
still fits under --max-params (widths kept inside the space's ranges, at least 2), the recipe kept.
`--warm-start URL[,URL]` adds the best complete trials of earlier studies, scaled the same way;
`--no-warm-start` runs cold. Each point carries where it came from, which `report` and the study
note show (user attribute "prior" of the study).

>>> from space.searchspace import SearchSpace
>>> pts = prior_points(SearchSpace.default(), 3600)
>>> all(p.params < 3600 for p in pts) and "under3762" in [p.source for p in pts]
True
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from space.searchspace import IntRange, SearchSpace, _Recorder
from space.spec import count_params
from storage.records import StudySettings, TrialRecord

PRIOR_FILE = Path(__file__).with_name("prior.json")
WIDTH = re.compile(r"^b(\d+)_(w\d+|sq_w)$")
WARM_TOP = 3  # best complete trials taken from each --warm-start study
# What was learnt after the shipped models were found, as settings applied to their designs: each
# shipped design also starts with these values (named e.g. "under3762+silu"), ahead of the designs as
# shipped, where the study's space draws them. None stands today. Evidence for each one tried:
# - activation silu, taken and dropped: under 3,000 parameters SiLU beat ReLU on each of 4 paired
#   seeds, mean +0.07 in the last-3 validation minimum (experiments/design-check round 3; find-3k-v4
#   trial 0 against find-3k-v2's), but at 3,600 its 5 paired seeds average +0.008 (round 4;
#   find-3600-v2 against find-3600) for 12 % more time an epoch, and find-3600-v2, SiLU first, FAILED.
LESSONS: tuple[dict, ...] = ()


@dataclass(frozen=True)
class StartPoint:
    source: str  # "under3762" (the prior) or "study find-3762 trial 19" (--warm-start)
    point: dict  # the study space's parameters -> values, ready for enqueue_trial
    params: int  # the model's parameter count
    scale: float  # the factor its widths were multiplied by

    def describe(self) -> str:
        return f"{self.source} scaled x{self.scale:.2f} to {self.params:,} params"

    def to_dict(self) -> dict:
        return {"source": self.source, "params": self.params, "scale": round(self.scale, 3)}


def load_prior(path: Path = PRIOR_FILE) -> list[dict]:
    return json.loads(path.read_text())


def _width_dim(space: SearchSpace, name: str):
    m = WIDTH.match(name)
    if m.group(2) == "sq_w":
        return space.squeeze_width
    block = int(m.group(1))
    return space.widths[block - 1] if block <= len(space.widths) else None


def _scaled(space: SearchSpace, point: dict, factor: float) -> tuple[dict, int] | None:
    """The point with its widths x factor (inside the space's ranges), restricted to what the space
    draws, and its parameter count; None where the space cannot build it."""
    q = {}
    for k, v in point.items():
        if WIDTH.match(k):
            w = max(2, round(v * factor))
            dim = _width_dim(space, k)
            if isinstance(dim, IntRange):
                w = min(max(w, dim.low), dim.high)
            q[k] = w
        else:
            q[k] = v
    full, problems = space.complete(q)
    if problems:
        return None
    trial = _Recorder(q)
    spec, _ = space.sample(trial)
    return {k: q[k] for k in trial.values}, count_params(spec)


def scale_to_budget(space: SearchSpace, point: dict, max_params: int) -> tuple[dict, int, float] | None:
    """(point, params, factor) for the largest width factor in [0.2, 4] that fits the budget, or
    None when the space cannot build the point's family or even its narrowest fit is over."""
    # A complete point written before a dimension existed was drawn without it: absent means off, as
    # for a stored space (SearchSpace.ABSENT_MEANS). Without this, prior.json's separable entries
    # would be refused as "missing factorized_depthwise" by a space that draws it.
    point = {**SearchSpace.ABSENT_MEANS, **point}
    fits = lambda f: (r := _scaled(space, point, f)) is not None and r[1] < max_params
    lo, hi = 0.2, 4.0
    if not fits(lo):
        return None
    for _ in range(30):  # the count grows with the factor: bisect for the largest that fits
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    q, n = _scaled(space, point, lo)
    return q, n, lo


def prior_points(space: SearchSpace, max_params: int, entries: list[dict] | None = None,
                 lessons: tuple[dict, ...] = LESSONS) -> list[StartPoint]:
    """The prior's points scaled to the budget, one per entry the space can build, nearest the
    budget first (a design scaled least is the most trusted); first each entry with the lessons
    (LESSONS) applied, where the space draws them, then the entries as shipped."""
    entries = load_prior() if entries is None else entries
    out = []
    for lesson in (*lessons, {}):
        taught = []
        for e in entries:
            if lesson and all(e["point"].get(k, SearchSpace.ABSENT_MEANS.get(k)) == v for k, v in lesson.items()):
                continue  # the design already has it: the shipped entry below is the same point
            fitted = scale_to_budget(space, {**e["point"], **lesson}, max_params)
            if fitted and all(space.complete(fitted[0])[0].get(k) == v for k, v in lesson.items()):
                q, n, f = fitted
                name = e["name"] + "".join(f"+{v}" for v in lesson.values())
                taught.append(StartPoint(name, q, n, f))
        out += sorted(taught, key=lambda p: abs(1 - p.scale))
    return _distinct(out)


def warm_points(space: SearchSpace, max_params: int, studies: list) -> list[StartPoint]:
    """The best complete trials (by the study's ranking) of earlier studies, scaled to the budget
    where their family fits this space. `studies`: optuna.Study objects."""
    from storage.ranking import ranked_trials
    out = []
    for study in studies:
        stored = StudySettings.of(study).space
        their = SearchSpace.from_dict(stored) if stored else SearchSpace.default()
        taken = 0
        for t in ranked_trials(study):
            point, problems = their.complete(t.params)
            if problems:
                continue
            point.update({k: v for k, v in (TrialRecord.of(t).config or {}).items() if k not in point})
            fitted = scale_to_budget(space, point, max_params)
            if fitted:
                q, n, f = fitted
                out.append(StartPoint(f"study {study.study_name} trial {t.number}", q, n, f))
                taken += 1
            if taken >= WARM_TOP:
                break
    return _distinct(out)


def _distinct(points: list[StartPoint]) -> list[StartPoint]:
    seen, out = set(), []
    for p in points:
        key = json.dumps(p.point, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
