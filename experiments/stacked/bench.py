"""Model-epochs per hour: today's path (one model per process, many processes) against the stacked
path (search.stacked: many seeds of one model as one network per process), on one device, in one run.

Every layout in --layouts is "PxC": P processes side by side, each training C copies (C = 1 is
today's path: search.train.train, one seed per process; C > 1 is train_stacked). Every process
loads the data, then waits until all are ready, so they train side by side; each trains --epochs
epochs on --images training images and scores the validation split (10,000) every epoch, as a
search trial does. Throughput counts only the epochs after the first (warm-up: cuDNN's choices,
allocator) and is scaled to full epochs of 50,000 images:

    model-epochs/hour = sum over processes of C * 3600 / (median epoch seconds) * images / 50,000

    python experiments/stacked/bench.py --device cpu --model under3762 --images 4000 --epochs 3 \\
        --layouts 1x1,1x2,1x4 --threads 1

On a GPU, start NVIDIA's MPS daemon first (results/find-5k-gpu.sh does) so that today's many
processes share the GPU as find's workers did.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

FULL_EPOCH = 50_000  # a search trial's epoch (the train split)


def load_model(name: str):
    from space.recipe import TrainConfig
    from space.spec import ArchSpec
    entry = json.loads((HERE / "models.json").read_text())[name]
    return ArchSpec.from_dict(entry["spec"]), TrainConfig.from_dict(entry["config"])


def worker(args) -> None:
    import dataclasses
    from search.data import load_mnist, make_split
    from search.device import select
    from search.stacked import train_stacked
    from search.train import train
    select(args.device)
    spec, cfg = load_model(args.model)
    cfg = dataclasses.replace(cfg, epochs=args.epochs, threads=args.threads)
    split = make_split(load_mnist(args.data_dir, download=False), final=False, train_limit=args.images)
    Path(args.ready, str(os.getpid())).touch()
    while not Path(args.go).exists():  # all processes start training together
        time.sleep(0.05)
    seeds = list(range(args.first_seed, args.first_seed + args.copies))
    t0 = time.perf_counter()
    if args.copies == 1:
        histories = [train(spec, dataclasses.replace(cfg, seed=seeds[0]), split, quiet=True).history]
    else:
        histories = [r.history for r in train_stacked(spec, cfg, split, seeds)]
    print(json.dumps({"seconds": [h["seconds"] for h in histories[0]], "wall": time.perf_counter() - t0,
                      "val_acc": [h["val_acc"] for h in histories[-1]] if histories else []}), flush=True)


def run_layout(args, procs: int, copies: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ready, go = Path(tmp, "ready"), Path(tmp, "go")
        ready.mkdir()
        cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--model", args.model,
               "--images", str(args.images), "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--copies", str(copies), "--ready", str(ready), "--go", str(go)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        ps = [subprocess.Popen(cmd + ["--first-seed", str(1 + 1000 * i)], stdout=subprocess.PIPE, text=True)
              for i in range(procs)]
        while len(list(ready.iterdir())) < procs:
            if any(p.poll() not in (None, 0) for p in ps):
                raise SystemExit(f"a worker of {procs}x{copies} died")
            time.sleep(0.1)
        go.touch()
        t0 = time.perf_counter()
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
        wall = time.perf_counter() - t0
    scale = args.images / FULL_EPOCH
    per_proc = [statistics.median(o["seconds"][1:] or o["seconds"]) for o in outs]
    rate = sum(copies * 3600 / s * scale for s in per_proc)
    return {"layout": f"{procs}x{copies}", "models": procs * copies, "median_epoch_s": statistics.median(per_proc),
            "model_epochs_per_hour": rate, "wall_s": wall, "epochs": args.epochs, "images": args.images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="under3762", help="a name in models.json")
    ap.add_argument("--images", type=int, default=10_000, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--layouts", default="1x1,1x4")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--first-seed", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--go", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    print(f"device {args.device}, model {args.model}, {args.images} images x {args.epochs} epochs, "
          f"{args.threads} thread(s) per process; model-epochs/hour scaled to {FULL_EPOCH:,}-image epochs", flush=True)
    print(f"{'layout':>7} {'models':>6} {'epoch s':>8} {'model-epochs/h':>15} {'wall s':>7}", flush=True)
    for layout in args.layouts.split(","):
        procs, copies = (int(v) for v in layout.split("x"))
        row = run_layout(args, procs, copies)
        rows.append(row)
        print(f"{row['layout']:>7} {row['models']:>6} {row['median_epoch_s']:>8.2f} "
              f"{row['model_epochs_per_hour']:>15,.0f} {row['wall_s']:>7.1f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
