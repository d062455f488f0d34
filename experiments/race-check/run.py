"""Why confirm runs further seeds, and what a race saves: from every confirm row the committed
studies hold (the search seed's consistency score, then seeds 10001, 10002, ...), nothing trained.

1. For bars 99.10-99.30: of the candidates whose search score and first confirm seed were at or
   above the bar, how many did the second confirm seed put below it (a candidate a shorter confirm
   would have sent to the test set)?
2. At the bars 99.15 and 99.25 (today's default at the 99.4 target): the confirm seeds a race would
   not have run (every seed after the first score below the bar, the search score included) and
   their training time, from the rows' recorded core-seconds (spread evenly over the row's seeds;
   rows made before costs were recorded count none). Each study ran under its own bar, recorded in
   the lab notes; here one bar is applied to all, as a race under the default would have.

Run: .venv/bin/python experiments/race-check/run.py   (prints; writes race.json beside it)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

def rows() -> list[dict]:
    import optuna
    from storage.db import studies_in
    from storage.records import FindRecord
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return [{"study": study.study_name, "trial": trial, "scores": row.scores, "seeds_run": len(row.results),
             "core_seconds": row.core_seconds}
            for study in studies_in(ROOT / "results") for trial, row in sorted(FindRecord.of(study).confirmed().items())]


def main() -> None:
    rs = rows()
    print(f"{len(rs)} confirm rows in {len({r['study'] for r in rs})} studies\n")
    print("1. the second confirm seed, where the search score and the first confirm seed cleared the bar")
    caught = {}
    for bar in (99.10, 99.15, 99.20, 99.25, 99.30):
        two = [r for r in rs if len(r["scores"]) >= 3 and r["scores"][0] >= bar and r["scores"][1] >= bar]
        fell = [r for r in two if r["scores"][2] < bar]
        caught[bar] = {"candidates": len(two), "second_seed_below": [f"{r['study']}#{r['trial']}" for r in fell]}
        print(f"   bar {bar:.2f}: {len(two):>2} candidates, {len(fell)} put below by the second seed"
              + (f" ({', '.join(caught[bar]['second_seed_below'])})" if fell else ""))
    print("\n2. what a race skips (the confirm seeds after the first score below the bar)")
    saved = {}
    for bar in (99.15, 99.25):
        ran = skipped = 0
        secs_ran = secs_skipped = 0.0
        for r in rs:
            per_seed = (r["core_seconds"] or 0.0) / max(1, r["seeds_run"])
            below = next((i for i, s in enumerate(r["scores"]) if s < bar), None)
            confirm_seeds = len(r["scores"]) - 1  # the first score is the search's own seed
            would_run = confirm_seeds if below is None else max(0, below)  # seeds up to the first below
            ran += confirm_seeds
            secs_ran += per_seed * confirm_seeds
            skipped += confirm_seeds - would_run
            secs_skipped += per_seed * (confirm_seeds - would_run)
        saved[bar] = {"rows": len(rs), "confirm_seeds": ran, "race_skips": skipped,
                      "core_hours": round(secs_ran / 3600, 3), "race_saves_core_hours": round(secs_skipped / 3600, 3)}
        print(f"   bar {bar:.2f}: {ran} confirm seeds ({secs_ran / 3600:.2f} core-h recorded); a race skips {skipped} "
              f"({secs_skipped / 3600:.2f} core-h, {secs_skipped / secs_ran:.0%})")
    Path(__file__).with_name("race.json").write_text(json.dumps({"rows": rs, "second_seed": caught,
                                                                 "race": saved}, indent=1) + "\n")


if __name__ == "__main__":
    main()
