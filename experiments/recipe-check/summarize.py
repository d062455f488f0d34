"""Each arm's validation last-3 minima, seed by seed, and its difference from the base recipe on the
same seeds (paired: a seed fixes the initial weights, the shuffles and the augmentation draws).
Seed 10001 of the base arm is find-3k's own confirm run of trial 13 (results/find-3k.db).

    .venv/bin/python experiments/recipe-check/summarize.py > experiments/recipe-check/output.txt
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from space.hold import last_k_minimum  # noqa: E402

SEEDS = (10001, 10002, 10003, 10004)
K = 3


def arm_minima(arm: str) -> dict[int, float]:
    out = {}
    for s in SEEDS:
        path = HERE / f"{arm}-seed{s}" / "metrics.json"
        if path.is_file():
            out[s] = last_k_minimum([e["val_acc"] for e in json.loads(path.read_text())["epochs"]], K)
    if arm == "base":  # find's confirm seed of this very trial and recipe
        db = sqlite3.connect(f"file:{ROOT / 'results/find-3k.db'}?mode=ro", uri=True)
        row = db.execute("select value_json from study_user_attributes where key = 'find:partial:confirm:13'").fetchone()
        out[10001] = last_k_minimum(json.loads(row[0])["results"]["10001"], K)
    return dict(sorted(out.items()))


def main() -> None:
    base = arm_minima("base")
    print(f"find-3k trial 13 (2,880 parameters), validation last-{K} minima per seed; search score (seed 13) 99.30")
    print(f"{'arm':<5} " + " ".join(f"{s:>6}" for s in SEEDS) + f" {'mean':>7} {'sd':>6} {'vs base (paired)':>17}")
    for arm in ("base", "b32", "wd", "ls"):
        m = arm_minima(arm)
        if not m:
            continue
        cells = " ".join(f"{m[s]:6.2f}" if s in m else f"{'':>6}" for s in SEEDS)
        mean = statistics.mean(m.values())
        sd = statistics.stdev(m.values()) if len(m) > 1 else float("nan")
        diffs = [m[s] - base[s] for s in m if s in base]
        paired = (f"{statistics.mean(diffs):+.3f} (n={len(diffs)}"
                  + (f", sd {statistics.stdev(diffs):.3f})" if len(diffs) > 1 else ")")) if arm != "base" else ""
        print(f"{arm:<5} {cells} {mean:7.3f} {sd:6.3f} {paired:>17}")


if __name__ == "__main__":
    main()
