"""Many seeds of a shipped model on the validation split, for the hold estimator's check at scale
(issue 26): each seed is the model's own recipe for 15 epochs on the 50,000 training images, scored
on the 10,000 validation images every epoch, exactly a confirm seed's protocol (search.retrain,
final=False). The test set is never touched. Seeds are trained as stacks (search.stacked): P
processes side by side, each C seeds as one network. Every process rewrites its JSON after each
epoch, so a run cut short still returns what it finished.

    python experiments/stacked/seeds.py --device cuda --model under3762 --first-seed 101 \\
        --procs 4 --copies 16 --out /tmp/out
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def worker(args) -> None:
    import torch
    from bench import load_model
    from search.data import load_mnist, make_split
    from search.device import select
    from search.stacked import train_stacked
    select(args.device)
    if args.no_tf32:  # cuDNN's convolutions in full fp32, as on the CPU (its default on a GPU is TF32)
        torch.backends.cudnn.allow_tf32 = False
    import dataclasses
    spec, cfg = load_model(args.model)
    if args.epochs:  # a dry run only: the check itself keeps the recipe's 15
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    split = make_split(load_mnist(args.data_dir, download=False), final=False, train_limit=args.images)
    seeds = list(range(args.first_seed, args.first_seed + args.copies))
    out = Path(args.out, f"{args.model}-{seeds[0]}-{seeds[-1]}.json")
    histories = {s: [] for s in seeds}
    t0 = time.perf_counter()

    def save(records):
        for s, rec in zip(seeds, records):
            histories[s].append(rec["val_acc"])
        out.write_text(json.dumps({"model": args.model, "device": args.device, "epochs": cfg.epochs,
                                   "tf32": bool(torch.backends.cudnn.allow_tf32) if args.device != "cpu" else None,
                                   "seconds": time.perf_counter() - t0, "val_acc": histories}))

    train_stacked(spec, cfg, split, seeds, on_epoch=save)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", required=True, help="a name in models.json")
    ap.add_argument("--first-seed", type=int, default=101)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=None, help="dry runs: fewer epochs than the recipe's")
    ap.add_argument("--images", type=int, default=None, help="dry runs: fewer training images")
    ap.add_argument("--no-tf32", action="store_true", help="cuDNN convolutions in full fp32 on a GPU")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    base = [sys.executable, __file__, "--worker", "--device", args.device, "--model", args.model,
            "--copies", str(args.copies), "--out", args.out] + (["--data-dir", args.data_dir] if args.data_dir else [])
    base += (["--epochs", str(args.epochs)] if args.epochs else []) + (["--images", str(args.images)] if args.images else [])
    base += ["--no-tf32"] if args.no_tf32 else []
    t0 = time.perf_counter()
    ps = [subprocess.Popen(base + ["--first-seed", str(args.first_seed + i * args.copies)]) for i in range(args.procs)]
    codes = [p.wait() for p in ps]
    print(f"{args.model}: {args.procs}x{args.copies} seeds from {args.first_seed}, exit {codes}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
