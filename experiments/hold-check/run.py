"""Held means held, on the shipped models: each model's hold estimate (space.hold) from the verify
seeds its study stored, and the estimator's check on seeds it never saw (under4k's and under5k's
seeds 4 and 5, trained on all 60,000 and scored on test after their verdicts: experiments/
under*-extra). Nothing is trained; every number comes from committed files.

Run: .venv/bin/python experiments/hold-check/run.py   (prints a table and writes hold.json beside it)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from space.hold import HOLD_LEVEL, decide, last_k_minimum  # noqa: E402

EXTRA = {"under4k": "under4k-extra", "under5k": "under5k-extra"}  # seeds trained after the verdict


def main() -> None:
    rows = []
    for card in sorted((ROOT / "models").glob("*.pt2")):
        meta_path = card.with_suffix(".spec.json")
        import torch  # the file's metadata, read as data only
        extra = {"mnist_nas.json": ""}
        torch.export.load(str(card), extra_files=extra)
        meta = json.loads(extra["mnist_nas.json"])
        v = meta["verify"]
        k, target = v["k"], v["target"]
        seen = [last_k_minimum(a, k) for _, a in sorted(v["results"].items(), key=lambda kv: int(kv[0]))]
        d = decide(seen, target=target, level=HOLD_LEVEL)
        unseen = []
        if card.stem in EXTRA:
            for m in sorted((ROOT / "experiments" / EXTRA[card.stem]).glob("seed*/metrics.json")):
                accs = [e["test_acc"] for e in json.loads(m.read_text())["epochs"]]
                unseen.append(last_k_minimum(accs, k))
        both = decide(seen + unseen, target=target, level=HOLD_LEVEL) if unseen else None
        rows.append({"model": card.stem, "params": meta["params"], "target": target, "seeds": len(seen),
                     "minima": seen, "hold_probability": round(d.probability, 4), "verdict_now": d.verdict,
                     "unseen_minima": unseen, "unseen_held": sum(m >= target for m in unseen),
                     "all_seeds_probability": round(both.probability, 4) if both else None,
                     "all_seeds_verdict": both.verdict if both else None})
    print(f"{'model':<14} {'params':>6} {'target':>6}  {'verify minima':<22} {'P(new seed holds)':>17}  "
          f"{'verdict':<9} unseen seeds held; all seeds")
    for r in rows:
        print(f"{r['model']:<14} {r['params']:>6,} {r['target']:>6}  {' / '.join(f'{m:.2f}' for m in r['minima']):<22} "
              f"{r['hold_probability']:>16.1%}  {r['verdict_now']:<9} "
              + (f"{r['unseen_held']} of {len(r['unseen_minima'])} ({', '.join(f'{m:.2f}' for m in r['unseen_minima'])}); "
                 f"P {r['all_seeds_probability']:.1%} from {r['seeds'] + len(r['unseen_minima'])} seeds, "
                 f"{r['all_seeds_verdict']}" if r["unseen_minima"] else "-"))
    print("MORE: undecided, the rule asks for one more seed (up to 8)")
    (Path(__file__).with_name("hold.json")).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
