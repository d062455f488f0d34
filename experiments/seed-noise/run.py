"""How much of a search score is the seed? Every confirm row of the committed studies (15 epochs):
the trial's search score (seed 0, validation, min of the last K epochs) against its confirm seeds'
scores (same split, other seeds), and, where the candidate met the test set, its verify minima.
Nothing is trained; reads results/*.db only.

Run: .venv/bin/python experiments/seed-noise/run.py > experiments/seed-noise/output.txt
"""
import glob
import json
import sqlite3
import statistics as st
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rows():
    for db in sorted(glob.glob(str(ROOT / "results" / "*.db"))):
        con = sqlite3.connect(db)
        attrs = dict(con.execute("SELECT key, value_json FROM study_user_attributes").fetchall())
        score = dict(con.execute("SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                                 "WHERE t.state = 'COMPLETE'").fetchall())
        for key, raw in attrs.items():
            if not key.startswith("find:confirm:"):
                continue
            row = json.loads(raw)
            trial = int(key.rsplit(":", 1)[1])
            if not row or row.get("epochs") != 15 or trial not in score:
                continue
            k = row.get("k", 3)
            verify = json.loads(attrs.get(f"find:verify:{trial}", "null")) or {}
            yield dict(study=Path(db).stem, trial=trial, params=row.get("params"), seed0=score[trial],
                       confirm=[min(a[-k:]) for a in row["results"].values()],
                       test=[min(a[-verify.get("k", k):]) for a in verify.get("results", {}).values()])


def main():
    data = list(rows())
    print(f"{len(data)} confirmed candidates (15 epochs) in {len({d['study'] for d in data})} studies\n")
    print(f"{'study':15s} {'trial':>5s} {'params':>6s} {'seed 0':>6s}  confirm seeds      test minima")
    for d in data:
        print(f"{d['study']:15s} {d['trial']:5d} {d['params']:6,d} {d['seed0']:6.2f}  "
              f"{' '.join(f'{x:.2f}' for x in d['confirm']):17s}  {' '.join(f'{x:.2f}' for x in d['test'])}")
    diffs = [x - d["seed0"] for d in data for x in d["confirm"]]
    print(f"\nconfirm seed - search score: {len(diffs)} seeds, mean {st.mean(diffs):+.3f}, sd {st.stdev(diffs):.3f} "
          f"(a candidate is chosen for its seed 0, so its other seeds regress towards its mean)")
    two = [d for d in data if len(d["confirm"]) >= 2]
    within = [st.stdev(d["confirm"][:2]) ** 2 for d in two]
    print(f"seed-to-seed sd within a candidate (its first two confirm seeds, pooled over {len(two)}): "
          f"{st.mean(within) ** 0.5:.3f}")
    s0 = [d["seed0"] for d in two]
    m = [st.mean(d["confirm"][:2]) for d in two]
    print(f"across candidates: sd of the search score {st.stdev(s0):.3f}, of the confirm mean {st.stdev(m):.3f}, "
          f"correlation {st.correlation(s0, m):.2f}")
    tested = [d for d in data if d["test"]]
    gaps = [st.mean(d["test"]) - min([d["seed0"], *d["confirm"]]) for d in tested]
    print(f"met the test set: {len(tested)}; mean test minimum - robust validation score: "
          f"{st.mean(gaps):+.2f} (range {min(gaps):+.2f} to {max(gaps):+.2f})")


if __name__ == "__main__":
    main()
