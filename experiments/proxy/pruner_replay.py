"""Replay the median pruner on the committed studies' stored curves, judging from epoch W instead of
epoch 4: how many search epochs it would have run, and which complete trials it would have cut.
Nothing is trained.

Rule replayed (Optuna's MedianPruner as search/config.py sets it, n_startup_trials=4; Optuna's
percentile pruners compare with COMPLETE trials only): a trial is cut after epoch s >= W when its
best validation accuracy up to s is below the median of the values at s of the trials before it (by
number) that completed, once at least 4 have. Until 2026-12-01 the replay compared the trial's
value at s instead (stricter where a curve dips; `--at-step` replays that, which is what the
figures before that date measured). A trial keeps
its stored curve up to the epoch the replay cuts it; a trial the real pruner cut at epoch e, and the
replay does not cut by e, is cut at e as it was (its later epochs were never run). Limits: trials
cut earlier change the medians later trials meet, which the replay follows; trials TPE would have
drawn differently after a different history cannot be replayed; with two workers a trial met only
the trials finished when it reached each epoch, the replay lets it meet every earlier one; some
studies ran other pruner settings (the replay of W = 4 is the baseline to compare with, not the
studies' own history).

Variants (2026-11-30, after find-3400): --window K judges no epoch of the last K (the ones the score
is the minimum of; search/config.py: pruner_judges), and --draws-only judges the sampler's draws
against the median of completed draws only, never a start point (search.config.is_start_point, as
`--pruner median-draws` tells them: enqueued, or a retry of an enqueued trial), which in find-3400 set a median that cut 29 of 35 draws at epoch 2.

Run: .venv/bin/python experiments/proxy/pruner_replay.py [W ...] [--window K] [--draws-only] [--at-step]
     (default W: 1 2 3 4)
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from search.config import is_start_point  # noqa: E402
from storage.db import studies_in  # noqa: E402

STARTUP = 4  # MedianPruner(n_startup_trials=4): no trial is cut before 4 trials have finished


def curves(study) -> list[tuple[int, list[float], bool, bool]]:
    """(number, validation accuracy per epoch as stored, complete?, enqueued?) of every trial that
    trained."""
    out = []
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for t in trials.values():
        accs = [e["val_acc"] for e in t.user_attrs.get("epochs", [])]
        if accs and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            out.append((t.number, accs, t.state == optuna.trial.TrialState.COMPLETE,
                        is_start_point(t, trials)))
    return sorted(out)


def replay(trials, warmup: int, epochs: int = 15, window: int = 0, draws_only: bool = False,
           at_step: bool = False) -> tuple[int, list[int]]:
    """(epochs run, numbers of complete trials cut) under the median rule judged from `warmup` to
    epoch `epochs - window`; draws_only: start points are never judged nor part of the median;
    at_step: the trial's score at epoch s meets the median, instead of its best so far (Optuna's)."""
    ran, cut, done = 0, [], []  # done: the curves of the trials before it that completed in the replay
    for number, accs, complete, enqueued in trials:
        kept = len(accs)
        if len(done) >= STARTUP and not (draws_only and enqueued):
            for s in range(max(warmup, 1), min(len(accs), epochs - window) + 1):
                score = accs[s - 1] if at_step else max(accs[:s])
                if score < statistics.median(c[s - 1] for c in done):
                    kept = s
                    break
        ran += kept
        if complete and kept == len(accs):
            if not (draws_only and enqueued):
                done.append(accs)
        elif complete:
            cut.append(number)
    return ran, cut


def main(warmups: list[int], window: int = 0, draws_only: bool = False, at_step: bool = False) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [s for s in studies_in(ROOT / "results")
               if any(len(t.user_attrs.get("epochs", [])) == 15 for t in s.get_trials(deepcopy=False))]
    totals = {w: [0, 0, 0, 0] for w in warmups}  # epochs, bests cut, top-3 cut, complete cut
    real_total, n_top3 = 0, 0
    print(f"{'study':<16} {'real epochs':>11}  " + "  ".join(f"{'from ' + str(w) + ': epochs, cut':>26}" for w in warmups))
    for study in studies:
        trials = curves(study)
        real = sum(len(t[1]) for t in trials)
        real_total += real
        complete = sorted(((min(a[-3:]), n) for n, a, c, _ in trials if c), reverse=True)
        top3 = [n for _, n in complete[:3]]
        n_top3 += len(top3)
        cells = []
        for w in warmups:
            ran, cut = replay(trials, w, window=window, draws_only=draws_only, at_step=at_step)
            lost = [n for n in top3 if n in cut]
            totals[w][0] += ran
            totals[w][1] += bool(top3) and top3[0] in cut
            totals[w][2] += len(lost)
            totals[w][3] += len(cut)
            cells.append(f"{ran:>5}, {len(cut)} ({'best' if top3 and top3[0] in cut else len(lost)} of top 3)".rjust(26))
        print(f"{study.study_name:<16} {real:>11}  " + "  ".join(cells))
    print(f"{'all':<16} {real_total:>11}  " + "  ".join(
        f"{t[0]:>5} ({100 * t[0] / real_total:.0f} %), {t[3]} cut".rjust(26) for t in totals.values()))
    for w, t in totals.items():
        print(f"judging from epoch {w}: {t[0]} of the {real_total} epochs the studies ran ({100 * t[0] / real_total:.0f} %); "
              f"{t[3]} complete trials cut, among them {t[2]} of the {n_top3} top-3 trials and {t[1]} studies' best")


if __name__ == "__main__":
    args = sys.argv[1:]
    window = int(args[args.index("--window") + 1]) if "--window" in args else 0
    draws_only, at_step = "--draws-only" in args, "--at-step" in args
    ws = [int(a) for i, a in enumerate(args) if a.isdigit() and (i == 0 or args[i - 1] != "--window")]
    print(f"median rule ({'score at the epoch' if at_step else 'best score so far, as Optuna'}); judged epochs W..{15 - window}"
          + ("; draws judged against draws only, start points never" if draws_only else ""))
    main(ws or [1, 2, 3, 4], window=window, draws_only=draws_only, at_step=at_step)
