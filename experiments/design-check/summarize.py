"""Each design's validation last-3 minima, seed by seed, its mean, and its difference from `base`
(under3762 scaled to 2,999 parameters) on the same seeds (paired: a seed fixes the initial weights,
the shuffles and the augmentation draws); also the median seconds an epoch took (runs two at a time,
so compare them only with each other). A design named "base-silu" is base with its ReLUs swapped
(train_act.py, round 3).

    .venv/bin/python experiments/design-check/summarize.py > experiments/design-check/output.txt
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from space.hold import last_k_minimum  # noqa: E402
from space.spec import ArchSpec, count_params  # noqa: E402

K = 3


def runs() -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for path in sorted((HERE / "runs").glob("*-seed*/metrics.json")):
        design, seed = path.parent.name.rsplit("-seed", 1)
        out.setdefault(design, {})[int(seed)] = json.loads(path.read_text())
    return out


def main() -> None:
    all_runs = runs()
    seeds = sorted({s for r in all_runs.values() for s in r})
    base = {s: last_k_minimum([e["val_acc"] for e in m["epochs"]], K) for s, m in all_runs.get("base", {}).items()}
    print(f"validation last-{K} minima per seed (15 epochs, 50,000 training images, under3762's recipe)")
    print(f"{'design':<10} {'params':>6} " + " ".join(f"{s:>6}" for s in seeds)
          + f" {'mean':>7} {'vs base (paired)':>18} {'s/epoch':>8}")
    for design in sorted(all_runs, key=lambda d: (d != "base", d)):
        r = all_runs[design]
        spec_name = design.split("-")[0]  # "base-silu": base, ReLUs swapped
        params = count_params(ArchSpec.from_json((HERE / "specs" / f"{spec_name}.json").read_text()))
        m = {s: last_k_minimum([e["val_acc"] for e in r[s]["epochs"]], K) for s in r}
        cells = " ".join(f"{m[s]:6.2f}" if s in m else f"{'':>6}" for s in seeds)
        diffs = [m[s] - base[s] for s in m if s in base]
        paired = "" if design == "base" or not diffs else (
            f"{statistics.mean(diffs):+.3f} (n={len(diffs)}" + (f", sd {statistics.stdev(diffs):.3f})" if len(diffs) > 1 else ")"))
        secs = statistics.median(e["seconds"] for s in r for e in r[s]["epochs"])
        print(f"{design:<10} {params:6,d} {cells} {statistics.mean(m.values()):7.3f} {paired:>18} {secs:8.1f}")


if __name__ == "__main__":
    main()
