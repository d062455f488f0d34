"""The one order of a study's trials: rank_key, the ranked complete trials, the best trial, and a
trial named on the command line ('best' or a number)."""
from __future__ import annotations

import optuna

from storage.db import StudyError
from storage.records import TrialRecord


def rank_key(t: optuna.trial.FrozenTrial) -> tuple:
    """The one order of complete trials, best first: consistency score down (the first objective
    under pareto too), then fewer parameters, then the earlier trial."""
    return (-t.values[0], TrialRecord.of(t).params or 0, t.number)


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(complete, key=rank_key)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best trial by rank_key: what search's summary, report and export all name."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def get_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """'best' (see best_trial) or a trial number, which must be COMPLETE."""
    if which == "best":
        best = best_trial(study)
        if best is None:
            raise StudyError(f"study {study.study_name!r} has no complete trial yet")
        return best
    try:
        number = int(which)
    except ValueError:
        raise StudyError(f"--trial must be a trial number or 'best', got {which!r}") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise StudyError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE:
        why = TrialRecord.of(t).ended or ""
        raise StudyError(f"trial {number} is {t.state.name}, not COMPLETE{f' ({why})' if why else ''}")
    return t
