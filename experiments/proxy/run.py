"""Which cheap proxy ranks trials like their 15-epoch consistency score? (issue: find that learns)

For every complete 15-epoch trial of the committed studies (results/*.db), retrain its exact spec
and recipe (same seed = trial number, same 50,000 / 10,000 split) under a cheap proxy and record the
proxy's last validation accuracy. analyse.py then compares, per study and pooled, the rank
correlation with the stored score of: each proxy, and epoch k of the real schedule (free: the
stored curves), at its cost in full-data epochs.

Proxies (cost in full-data epochs):
  c4      the whole schedule compressed into 4 epochs, all 50,000 images     (4.0)
  c3s20k  the whole schedule compressed into 3 epochs, 20,000 images          (1.2)

Resumable: rows are appended to proxy.jsonl, a (study, trial, proxy) already there is skipped.
Run: python experiments/proxy/run.py --data-dir $MNIST_DATA_DIR [--proxies c3s20k,c4] [--limit N] [--out FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from search.data import load_mnist, make_split  # noqa: E402
from search.train import train  # noqa: E402
from space.recipe import TrainConfig  # noqa: E402
from space.spec import ArchSpec  # noqa: E402

PROXIES = {"c4": (4, None), "c3s20k": (3, 20_000)}  # name: (epochs, train images or None = all)
OUT = Path(__file__).with_name("proxy.jsonl")


def complete_trials() -> list[tuple[str, optuna.trial.FrozenTrial]]:
    """(study, trial) for every complete 15-epoch trial, studies interleaved so a partial run
    still covers each study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from storage.db import studies_in
    per_study = []
    for study in studies_in(ROOT / "results"):
        ts = [t for t in study.get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE and len(t.user_attrs.get("epochs", [])) == 15]
        per_study.append([(study.study_name, t) for t in ts])
    out = []
    while any(per_study):
        for ts in per_study:
            if ts:
                out.append(ts.pop(0))
    return out


def compressed(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The same recipe with its whole schedule squeezed into `epochs` (OneCycle compresses by
    itself, its steps are counted from the epochs; StepLR's step size shrinks in proportion)."""
    step = max(1, round(cfg.step_size * epochs / cfg.epochs)) if cfg.step_size else 0
    return dataclasses.replace(cfg, epochs=epochs, step_size=step, threads=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--proxies", default="c4,c3s20k")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many trials (0 = all)")
    ap.add_argument("--out", type=Path, default=OUT, help="rows file (a pinned checkout writes into the work tree's)")
    a = ap.parse_args()
    out = a.out
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["study"], r["trial"], r["proxy"]))
    data = load_mnist(a.data_dir)
    splits = {}
    trials = complete_trials()
    if a.limit:
        trials = trials[:a.limit]
    print(f"{len(trials)} complete trials", flush=True)
    for name in a.proxies.split(","):
        epochs, limit = PROXIES[name]
        if limit not in splits:
            splits[limit] = make_split(data, final=False, train_limit=limit)
        for i, (study, t) in enumerate(trials):
            if (study, t.number, name) in done:
                continue
            spec = ArchSpec.from_dict(t.user_attrs["spec"])
            cfg = compressed(TrainConfig.from_dict(t.user_attrs["config"]), epochs)
            t0 = time.time()
            res = train(spec, cfg, splits[limit], quiet=True)
            row = {"study": study, "trial": t.number, "proxy": name, "params": t.user_attrs["params"],
                   "score": min(h["val_acc"] for h in t.user_attrs["epochs"][-3:]),
                   "proxy_val": res.accs()[-1], "proxy_curve": res.accs(), "seconds": round(time.time() - t0, 1),
                   "torch": torch.__version__}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{name} {i + 1}/{len(trials)}] {study} trial {t.number}: score {row['score']:.2f} "
                  f"proxy {row['proxy_val']:.2f} ({row['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
