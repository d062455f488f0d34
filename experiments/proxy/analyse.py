"""Rank correlation with the 15-epoch consistency score, per study and pooled: epoch k of the real
schedule (free: every trial stores its curve) and each proxy of run.py (proxy.jsonl), with the cost
of each in full-data epochs. Nothing is trained.

Run: .venv/bin/python experiments/proxy/analyse.py   (writes analysis.json beside it)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from run import PROXIES, complete_trials  # noqa: E402


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va and vb else None


def main() -> None:
    trials = complete_trials()
    by_study: dict[str, list] = {}
    for study, t in trials:
        by_study.setdefault(study, []).append(t)
    rows = {}
    for k in (1, 2, 3, 4, 6, 8, 10):
        per = {s: spearman([t.user_attrs["epochs"][k - 1]["val_acc"] for t in ts],
                           [min(e["val_acc"] for e in t.user_attrs["epochs"][-3:]) for t in ts])
               for s, ts in by_study.items()}
        every = [t for ts in by_study.values() for t in ts]
        rows[f"epoch {k}"] = {"cost_epochs": k, "per_study": per, "n": len(every),
                              "pooled": spearman([t.user_attrs["epochs"][k - 1]["val_acc"] for t in every],
                                                 [min(e["val_acc"] for e in t.user_attrs["epochs"][-3:]) for t in every])}
    proxy_rows = []
    path = Path(__file__).with_name("proxy.jsonl")
    if path.exists():
        proxy_rows = [json.loads(l) for l in path.read_text().splitlines()]
    index = {(s, t.number): t for s, ts in by_study.items() for t in ts}
    for name, (epochs, limit) in PROXIES.items():
        got = [r for r in proxy_rows if r["proxy"] == name]
        # the same trials' real epoch 4 and epoch 1, for a fair pooled comparison with the proxy
        same = [index[(r["study"], r["trial"])] for r in got if (r["study"], r["trial"]) in index]
        for k in (1, 4):
            if len(same) >= 3:
                rows.setdefault(f"epoch {k}", {})[f"pooled_on_{name}_trials"] = spearman(
                    [t.user_attrs["epochs"][k - 1]["val_acc"] for t in same],
                    [min(e["val_acc"] for e in t.user_attrs["epochs"][-3:]) for t in same])
        per = {}
        for s in by_study:
            rs = [r for r in got if r["study"] == s]
            per[s] = spearman([r["proxy_val"] for r in rs], [r["score"] for r in rs])
        pooled = spearman([r["proxy_val"] for r in got], [r["score"] for r in got])
        rows[f"proxy {name}"] = {"cost_epochs": epochs * (limit or 50_000) / 50_000, "per_study": per,
                                 "pooled": pooled, "n": len(got)}
    studies = sorted(by_study)
    print(f"{'signal':<16} {'cost':>5}  " + " ".join(f"{s[-10:]:>10}" for s in studies) + "  pooled (n)")
    for name, r in rows.items():
        vals = " ".join(f"{r['per_study'][s]:>10.2f}" if r["per_study"].get(s) is not None else f"{'-':>10}"
                        for s in studies)
        pooled = f"  {r['pooled']:.2f} ({r['n']})" if r.get("pooled") is not None else ""
        pooled += "".join(f"; on {k[10:-7]}'s trials {v:.2f}" for k, v in r.items()
                          if k.startswith("pooled_on_") and v is not None)
        print(f"{name:<16} {r['cost_epochs']:>5.1f}  {vals}{pooled}")
    print("per study: complete trials " + ", ".join(f"{s} {len(ts)}" for s, ts in sorted(by_study.items())))
    misses = median_misses(by_study)
    print("\nwhat a median rule at epoch k would cut (studies with at least 5 complete trials): how many studies'"
          " best trial, and how many of their top-3 trials, sat below their study's median at epoch k")
    for k, m in misses.items():
        print(f"  epoch {k:>2}: best below the median in {m['best_below']} of {m['studies']} studies; "
              f"top-3 trials below it: {m['top3_below']} of {m['top3']}")
    Path(__file__).with_name("analysis.json").write_text(json.dumps({**rows, "median_misses": misses}, indent=1) + "\n")


def median_misses(by_study: dict, least: int = 5) -> dict:
    """For each epoch k: in how many studies (of those with `least` complete trials or more) the
    trial with the best final score was below the median of the study's complete trials at epoch
    k, i.e. a median pruner judging epoch k against those trials would have cut it; likewise for
    each study's top 3. Complete trials only: a trial the real pruner cut has no final score."""
    out = {}
    for k in (1, 2, 3, 4, 6, 8):
        best_below = top3_below = top3 = n = 0
        for ts in by_study.values():
            if len(ts) < least:
                continue
            n += 1
            at_k = sorted(t.user_attrs["epochs"][k - 1]["val_acc"] for t in ts)
            median = (at_k[(len(at_k) - 1) // 2] + at_k[len(at_k) // 2]) / 2
            final = sorted(ts, key=lambda t: -min(e["val_acc"] for e in t.user_attrs["epochs"][-3:]))
            below = [t.user_attrs["epochs"][k - 1]["val_acc"] < median for t in final[:3]]
            best_below += below[0]
            top3_below += sum(below)
            top3 += len(below)
        out[k] = {"studies": n, "best_below": best_below, "top3_below": top3_below, "top3": top3}
    return out


if __name__ == "__main__":
    main()
