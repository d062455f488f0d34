"""What the prior is worth: `find --max-params 3600` from the defaults, warm (the shipped models'
designs scaled to the budget as start points) against cold (`--no-warm-start`), the same command
otherwise. For each study, its search trials in the order they started: the best consistency score
so far (validation) against the epochs trained so far (every epoch of every trial, pruned ones
included) and the search core-hours (those epochs' recorded seconds). Epochs are the fair measure
of work here: an epoch's seconds are wall-clock seconds of a one-thread process, and the cold run
shared the 2 cores with test runs (3 busy processes at times), which inflated its seconds.
Nothing is trained; the studies are opened read-only.

Run: .venv/bin/python experiments/prior-worth/run.py   (prints; writes prior-worth.json and
prior-worth.png beside it)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).parent
STUDIES = {"warm (the defaults)": ("find-3600", ROOT / "results" / "find-3600.db"),
           "cold (--no-warm-start)": ("find-3600-cold", ROOT / "results" / "find-3600-cold.db")}


def curve(name: str, path: Path) -> list[dict]:
    import optuna
    from storage.db import load_study
    from storage.records import TrialRecord
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = load_study(study_name=name, storage=f"sqlite:///{path}")
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    out, spent, epochs, best = [], 0.0, 0, None
    for t in sorted(trials, key=lambda t: t.datetime_start):
        rec = TrialRecord.of(t)
        spent += rec.seconds
        epochs += len(rec.history)
        if t.state.name == "COMPLETE" and (best is None or t.values[0] > best):
            best = t.values[0]
        out.append({"trial": t.number, "state": t.state.name, "params": rec.params,
                    "start_point": rec.start_point, "score": t.values[0] if t.state.name == "COMPLETE" else None,
                    "epochs_so_far": epochs, "search_core_hours": spent / 3600,
                    "best_so_far": best})
    return out


def main() -> None:
    curves = {label: curve(*where) for label, where in STUDIES.items() if where[1].is_file()}
    for label, rows in curves.items():
        done = [r for r in rows if r["score"] is not None]
        print(f"{label}: {len(rows)} trials started, {len(done)} complete, {rows[-1]['epochs_so_far']} epochs, "
              f"{rows[-1]['search_core_hours']:.2f} search core-hours; best {rows[-1]['best_so_far']}")
        for r in rows:
            print(f"  trial {r['trial']:>3} {r['state']:<8} {r['params'] or '':>6} "
                  f"{'' if r['score'] is None else format(r['score'], '.2f'):>6}  "
                  f"{r['epochs_so_far']:>4} epochs, {r['search_core_hours']:.2f} core-h, best so far {r['best_so_far']}"
                  + (f"  ({r['start_point']})" if r["start_point"] else ""))
    (HERE / "prior-worth.json").write_text(json.dumps(curves, indent=1) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rows in curves.items():
        pts = [(r["epochs_so_far"], r["best_so_far"]) for r in rows if r["best_so_far"] is not None]
        ax.step([x for x, _ in pts], [y for _, y in pts], where="post", marker=".", label=label)
    ax.axhline(99.25, color="grey", ls="--", lw=1, label="the default bar (99.25)")
    ax.set_xlabel("epochs trained in the search (pruned trials included)")
    ax.set_ylabel("best consistency score so far (val %)")
    ax.set_ylim(97.5, 99.5)
    ax.set_xlim(left=0)
    ax.set_title("find --max-params 3600: the prior's start points against a cold start")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "prior-worth.png", dpi=110)
    print(f"wrote {HERE / 'prior-worth.json'} and {HERE / 'prior-worth.png'}")


if __name__ == "__main__":
    main()
