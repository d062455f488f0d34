"""The hold estimate, checked leave-one-out on every verify seed the committed studies hold.

For each verified candidate (any verdict) in results/*.db, with the extra seeds trained after two
verdicts (experiments/under*-extra), each seed in turn is left out: the estimate (space.hold) is
made from the others and compared with what the left-out seed did. At the candidate's own target
(99.4 or 99.5) this is the question the rule answers; a grid of thresholds (the target -0.10 to
+0.10 in steps of 0.05) adds events across the range of estimates. Events of one candidate share
seeds, so they are not independent; and the prior spread (PRIOR_SD) was fitted on these same seeds,
which flatters the check. Nothing is trained; every number comes from committed files.

Run: .venv/bin/python experiments/hold-check/calibrate.py   (prints the tables; writes calibration.json)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from space.hold import HOLD_LEVEL, hold_probability, last_k_minimum  # noqa: E402

EXTRA = {("find-4k-lin", 26): "under4k-extra", ("find-5k-gpu", 31): "under5k-extra"}  # seeds after the verdict
BUCKETS = [(0.0, 0.5), (0.5, 0.75), (0.75, 0.9), (0.9, 0.95), (0.95, 1.0001)]


def candidates() -> list[dict]:
    import optuna
    from storage.db import studies_in
    from storage.records import FindRecord
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = []
    for study in studies_in(ROOT / "results"):
        for trial, row in sorted(FindRecord.of(study).verified().items()):
            minima = [last_k_minimum(a, row.k) for _, a in sorted(row.results.items())]
            extra = EXTRA.get((study.study_name, trial))
            if extra:
                for m in sorted((ROOT / "experiments" / extra).glob("seed*/metrics.json")):
                    minima.append(last_k_minimum([e["test_acc"] for e in json.loads(m.read_text())["epochs"]], row.k))
            out.append({"study": study.study_name, "trial": trial, "target": row.target, "minima": minima})
    return out


def events(cands: list[dict], offsets: list[float]) -> list[dict]:
    ev = []
    for c in cands:
        for i, left in enumerate(c["minima"]):
            rest = c["minima"][:i] + c["minima"][i + 1:]
            for off in offsets:
                t = round(c["target"] + off, 2)
                ev.append({"study": c["study"], "trial": c["trial"], "threshold": t, "seeds": len(rest),
                           "p": hold_probability(rest, t), "held": left >= t,
                           "rest_all_held": all(m >= t for m in rest)})
    return ev


def table(ev: list[dict]) -> list[dict]:
    rows = []
    for lo, hi in BUCKETS:
        b = [e for e in ev if lo <= e["p"] < hi]
        if b:
            rows.append({"p_from": lo, "p_to": min(hi, 1.0), "events": len(b),
                         "mean_estimate": sum(e["p"] for e in b) / len(b),
                         "held": sum(e["held"] for e in b) / len(b)})
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"  {'estimate':<11} {'events':>6}  {'mean estimate':>13}  {'held':>6}")
    for r in rows:
        print(f"  {r['p_from']:.2f}-{r['p_to']:.2f}  {r['events']:>6}  {r['mean_estimate']:>13.1%}  {r['held']:>6.1%}")


def main() -> None:
    cands = candidates()
    at_target = events(cands, [0.0])
    grid = events(cands, [-0.10, -0.05, 0.0, 0.05, 0.10])
    # what the rule would have passed: the others all held and the estimate reached the level
    passed = [e for e in grid if e["rest_all_held"] and e["p"] >= HOLD_LEVEL]
    brier = lambda ev: sum((e["p"] - e["held"]) ** 2 for e in ev) / len(ev)
    print(f"{len(cands)} verified candidates, {sum(len(c['minima']) for c in cands)} seeds "
          "(" + ", ".join(f"{c['study']}#{c['trial']} {len(c['minima'])}" for c in cands) + ")\n")
    show(f"at each candidate's own target: {len(at_target)} left-out seeds, Brier {brier(at_target):.3f}",
         table(at_target))
    show(f"\nthresholds target-0.10 ... target+0.10: {len(grid)} events, Brier {brier(grid):.3f}", table(grid))
    held = sum(e["held"] for e in passed)
    print(f"\nwhere the rule would say PASS (the other seeds all held, estimate >= {HOLD_LEVEL:.0%}): "
          f"{len(passed)} events, the left-out seed held in {held} ({held / len(passed):.1%}; "
          f"mean estimate {sum(e['p'] for e in passed) / len(passed):.1%})" if passed else "no PASS events")
    (Path(__file__).with_name("calibration.json")).write_text(json.dumps(
        {"candidates": cands, "at_target": table(at_target), "grid": table(grid),
         "brier_at_target": brier(at_target), "brier_grid": brier(grid),
         "pass_events": len(passed), "pass_events_held": held}, indent=1) + "\n")


if __name__ == "__main__":
    main()
