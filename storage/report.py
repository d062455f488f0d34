"""`report`: best trials, counts by state, Pareto front, and PNG plots of a study."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna

from storage import records
from storage.records import FindRecord, Prior, TrialRecord
from storage.db import StudyError, load_study
from storage.outputs import PLOT_SUFFIXES, check_output
from storage.ranking import ranked_trials

TrialState = optuna.trial.TrialState


KINDS = ("complete", "pruned", "over budget", "stopped", "failed", "running", "waiting")


def trial_kind(t: optuna.trial.FrozenTrial) -> str:
    """One of KINDS. Optuna stores a refused trial as PRUNED and a trial stopped by Ctrl-C or
    SIGTERM (retried with the same parameters on the next resume) as FAIL; neither is what its
    state says, so each is counted apart."""
    if t.state == TrialState.PRUNED and str(TrialRecord.of(t).ended or "").startswith("over budget"):
        return "over budget"
    if t.state == TrialState.FAIL and TrialRecord.of(t).stopped:
        return "stopped"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]


def pareto_front(points: list[tuple[float, int, object]]) -> list:
    """Points (score up, params down) not dominated by any other; sorted by params."""
    front, best = [], float("-inf")
    for score, params, item in sorted(points, key=lambda p: (p[1], -p[0])):
        if score > best:
            front.append((score, params, item))
            best = score
    return front


def row(t) -> str:
    r = TrialRecord.of(t)
    last = " ".join(f"{a:.2f}" for a in r.last_k or [])
    return (f"{t.number:>5} {r.params or 0:>7,} {t.values[0]:>8.2f}  {last:<20} "
            f"{len(r.history):>6} {r.seconds:>8.0f}  {'' if r.head_rf is None else r.head_rf:>4}")


def trial_dict(t) -> dict:
    r = TrialRecord.of(t)
    return {"trial": t.number, "params": r.params, "score": t.values[0], "last_k": r.last_k,
            "epochs": len(r.history), "seconds": r.seconds, "head_rf": r.head_rf, "spec": r.spec, "config": r.config}


def report(*, study_name: str, storage: str | None = None, top: int = 10, plots: str | Path | None = None,
           as_json: bool = False) -> dict | None:
    """Print counts by state, the space, the best trials (best first, by storage.ranking.rank_key),
    the Pareto front; write PNG plots to `plots` if given. as_json: print (and return) one JSON
    object instead, for scripts."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise StudyError(f"--top must be a positive integer, got {top!r}")
    if plots:  # checked before any reading: a folder that cannot be written is one line, with or without --json
        check_output(plots, what="--plots", folder=True)
    study = load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts = Counter(trial_kind(t) for t in trials)
    order = ranked_trials(study)
    complete = order
    n = len(trials)
    if as_json:
        front = pareto_front([(t.values[0], TrialRecord.of(t).params or 0, t) for t in complete])
        out = {"study": study.study_name, "trials": n, "counts": dict(counts),
               "settings": records.settings_attrs(study.user_attrs),
               "top": [trial_dict(t) for t in order[:top]], "pareto_front": [t.number for _, _, t in front],
               "find": records.find_attrs(study.user_attrs),  # as stored
               "cost": study_cost(study)}
        command_runs = records.verify_command_attrs(study.user_attrs)  # the `verify` command's, as stored
        if command_runs:
            out["verify"] = command_runs
        if plots:
            _write_plots(study, order, front, plots, top)
        print(json.dumps(out, indent=1))
        return out
    print(f"study {study.study_name!r}: {n} trials — " +
          ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k]))
    if n:
        print(f"refused over budget before training: {counts['over budget']}/{n} = {100 * counts['over budget'] / n:.0f}%")
    space = records.StudySettings.of(study).space
    if space is not None:
        print("search space (as stored in the study):")
        for part, d in space.items():
            print(f"  {part}: {json.dumps(d, separators=(',', ':'))}")
    prior = Prior.read(study.user_attrs)
    if prior is not None:
        from storage.notes import describe_prior
        print(f"start points: {describe_prior(prior)}")
    header = f"{'trial':>5} {'params':>7} {'score':>8}  {'last-K val acc':<20} {'epochs':>6} {'seconds':>8}  {'RF':>4}"
    print(f"\ntop {min(top, len(order))} by consistency score (min val acc over the last K epochs):")
    print(header)
    for t in order[:top]:
        print(row(t))
    front = pareto_front([(t.values[0], TrialRecord.of(t).params or 0, t) for t in complete])
    print("\nPareto front (score up, params down):")
    print(header)
    for _, _, t in front:
        print(row(t))
    find_section(study)
    cost_section(study)
    if plots:
        out = _write_plots(study, order, front, plots, top)
        print(f"\nplots: {', '.join(str(p) for p in out)}")


def _write_plots(study, order, front, plots, top) -> list[Path]:
    try:
        from storage.plots import plot_study
        return plot_study(study, order, front, Path(plots), top)
    except OSError as e:
        raise StudyError(f"cannot write plots to {plots}: {e.strerror or type(e).__name__}") from None


def study_cost(study) -> dict:
    """What a study cost, from what its trials and `find` recorded. Every trial trains on one
    thread, so training seconds are core-seconds. Wall time spans the first trial's start to the
    last trial's end (pauses between sessions included)."""
    # a WAITING retry carries a copy of its failed trial's attributes: its epochs ran once, there
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    kinds = Counter(trial_kind(t) for t in trials)

    def secs(t):
        return TrialRecord.of(t).seconds
    search = sum(secs(t) for t in trials)
    pruned = sum(secs(t) for t in trials if trial_kind(t) == "pruned")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    found = FindRecord.of(study)
    stages = {}
    for stage in records.STAGES:
        rows = list(found.runs(stage).values())
        going = list(found.in_progress(stage).values())  # seeds of a stage under way or stopped: they cost too
        recorded = [r.core_seconds for r in rows + going if r.core_seconds is not None]
        stages[stage] = {"candidates": len(rows), "in_progress": len(going), "core_hours": sum(recorded) / 3600,
                         "unrecorded": len(rows) - sum(r.core_seconds is not None for r in rows)}
    # find's wall time: to the last confirm or verify row finished (rows older than the timestamps
    # have none: then only the search's span is known)
    from datetime import datetime
    finished = [datetime.fromisoformat(r.finished) for stage in records.STAGES
                for r in found.runs(stage).values() if r.finished]
    # Optuna's times are naive local times, the rows' are UTC: astimezone() makes both aware
    find_wall = ((max([*finished, *(e.astimezone() for e in ends)]) - min(starts).astimezone()).total_seconds()
                 / 3600 if finished and starts else None)
    total = search / 3600 + sum(v["core_hours"] for v in stages.values())
    winners = 1 if found.winner is not None else 0
    return {"trials": len(trials), "complete": kinds["complete"], "pruned": kinds["pruned"],
            "refused": kinds["over budget"], "stopped": kinds["stopped"], "failed": kinds["failed"],
            "wall_hours": (max(ends) - min(starts)).total_seconds() / 3600 if starts and ends else 0.0,
            "find_wall_hours": find_wall,
            "search_core_hours": search / 3600,
            "pruned_share": pruned / search if search else 0.0,
            "confirm": stages["confirm"], "verify": stages["verify"], "total_core_hours": total,
            "core_hours_per_verified_model": total / winners if winners else None}


def cost_section(study) -> None:
    c = study_cost(study)
    find_wall = ("" if c["find_wall_hours"] is None else
                 f", find {c['find_wall_hours']:.1f} h (to its last confirm or verify result)")
    print(f"\ncost: {c['trials']} trials ({c['complete']} complete, {c['pruned']} pruned, {c['refused']} refused "
          f"over budget, {c['stopped']} stopped and retried, {c['failed']} failed); wall time, pauses between runs "
          f"included: search {c['wall_hours']:.1f} h (first trial's start to last trial's end){find_wall}")
    print(f"  search  {c['search_core_hours']:.2f} core-hours, {100 * c['pruned_share']:.0f} % of it on trials "
          f"later pruned")
    for stage in ("confirm", "verify"):
        st = c[stage]
        if st["candidates"] or st["in_progress"]:
            gap = f" ({st['unrecorded']} candidate(s) from before costs were recorded)" if st["unrecorded"] else ""
            going = (f", {st['in_progress']} more under way or stopped (their finished seeds counted)"
                     if st["in_progress"] else "")
            print(f"  {stage:<7} {st['core_hours']:.2f} core-hours, {st['candidates']} candidate(s){going}{gap}")
    per = c["core_hours_per_verified_model"]
    print(f"  total   {c['total_core_hours']:.2f} core-hours; "
          + (f"{per:.2f} per verified model" if per is not None else "no verified model yet"))


def find_section(study) -> None:
    """What `find` stored: confirmed trials (seed-robust scores) and verified ones (test, per seed)."""
    found = FindRecord.of(study)
    confirmed, verified = list(found.confirmed().values()), found.verified()
    if not confirmed:
        used = found.test_set_uses()
        if used.verify_command_seeds:  # a study verified by the `verify` command alone
            print(f"\ncandidates that met the test set: {used.candidates}; "
                  f"test-set uses: {used.verify_command_seeds} seeds of `verify` runs")
        return
    print("\nfind: confirmed on validation (consistency score per seed; robust = the minimum):")
    print(f"{'trial':>5} {'params':>7}  {'per seed':<28} {'robust':>7}  verified on test")
    for c in sorted(confirmed, key=lambda r: (-r.robust, r.params, r.trial)):
        v = verified.get(c.trial)
        verdict = (f"stopped by the confirm race: {c.stopped.why}" if v is None and c.stopped is not None
                   else "not yet" if v is None else (
            f"{v.verdict}: last-{v.k} minima " + " ".join(f"{m:.2f}" for m in v.minima())
            + (f", P(a new seed holds) {v.hold.hold_probability:.1%}" if v.hold is not None else "")
            + (f" ({v.finished[:16].replace('T', ' ')} UTC)" if v.finished is not None else "")))
        print(f"{c.trial:>5} {c.params:>7,}  {' '.join(f'{x:.2f}' for x in c.scores):<28} "
              f"{c.robust:>7.2f}  {verdict}")
    used = found.test_set_uses()
    print(f"candidates that met the test set: {used.candidates}"
          + (f"; winner: trial {found.winner}" if found.winner is not None else "")
          + f"; test-set uses: {used.seeds} verify seeds"
          + (f", {used.verify_command_seeds} seeds of `verify` runs" if used.verify_command_seeds else "")
          + (f" and {used.rejudged} re-judgement(s)" if used.rejudged else ""))


def front(studies: list[tuple[str, str]], *, output: str | Path | None = None, as_json: bool = False) -> list[dict]:
    """The accuracy-vs-parameters front across studies: every complete trial of each (name, URL),
    one Pareto front over all of them (consistency score up, parameters down), verified trials
    marked; a PNG at `output` if given. Scores are validation consistency scores of the search (one
    seed each, so the front is drawn through them); where `find` confirmed a trial, its seed-robust
    score (the minimum over its seeds) is given beside it as `robust` and drawn below the seed-0 point:
    the distance between the two is how much of a trial's lead was its seed."""
    if output:  # checked before any study is read: matplotlib picks the format by the suffix
        check_output(output, what="-o", suffixes=PLOT_SUFFIXES)
    points, per_study = [], {}
    for name, url in studies:
        study = load_study(study_name=name, storage=url)
        found = FindRecord.of(study)
        verified, confirmed = found.verified(), found.confirmed()
        rows = [{"study": name, "trial": t.number, "params": TrialRecord.of(t).params or 0, "score": t.values[0],
                 "robust": confirmed[t.number].robust if t.number in confirmed else None,
                 "verified": verified[t.number].passed if t.number in verified else None}
                for t in ranked_trials(study)]
        per_study[name] = rows
        points += [(r["score"], r["params"], r) for r in rows]
    best = [r for _, _, r in pareto_front(points)]
    if output:
        try:
            from storage.plots import plot_front
            plot_front(per_study, best, Path(output))
        except OSError as e:
            raise StudyError(f"cannot write {output}: {e.strerror or type(e).__name__}") from None
    if as_json:
        print(json.dumps({"front": best, "trials": sum(len(v) for v in per_study.values())}, indent=1))
        return best
    print(f"accuracy-vs-parameters front over {sum(len(v) for v in per_study.values())} complete trials of "
          f"{len(studies)} studies (validation consistency score; verified: find's test-set verdict)")
    print(f"{'study':<12} {'trial':>5} {'params':>7} {'score':>7} {'robust':>7}  verified")
    for r in best:
        v = "" if r["verified"] is None else ("PASS" if r["verified"] else "FAIL")
        rb = "" if r["robust"] is None else f"{r['robust']:.2f}"
        print(f"{r['study']:<12} {r['trial']:>5} {r['params']:>7,} {r['score']:>7.2f} {rb:>7}  {v}")
    confirmed = sum(r["robust"] is not None for rows in per_study.values() for r in rows)
    if confirmed:
        print(f"(robust: find's seed-robust validation score; {confirmed} trial(s) confirmed across these studies, "
              f"drawn on the plot)")
    if output:
        print(f"wrote {output}")
    return best
