"""`verify`: retrain a trial's architecture on all 60,000 images with several seeds, score the
official test set every epoch, and pass only if every seed holds the target in each of the last K."""
from __future__ import annotations

import multiprocessing as mp
import os

from storage.studies import get_trial, load_study


def _run_seed(job):
    spec_dict, cfg_dict, seed, data_dir, train_limit = job
    import torch
    torch.set_num_threads(1)
    from search.data import load_mnist, make_split
    from search.train import TrainConfig, train
    from space.spec import ArchSpec
    split = make_split(load_mnist(data_dir), final=True, train_limit=train_limit)
    cfg = TrainConfig.from_dict({**cfg_dict, "seed": seed, "threads": 1})
    progress = lambda r: print(f"seed {seed} epoch {r['epoch']:2d}: test {r['test_acc']:.2f} "
                               f"({r['seconds']:.0f}s)", flush=True)  # workers share the terminal
    res = train(ArchSpec.from_dict(spec_dict), cfg, split, on_epoch=progress, quiet=True)
    return seed, res.accs()


def verify(args) -> int:
    from search.data import ensure_files
    from search.train import TrainConfig
    study = load_study(args)
    trial = get_trial(study, args.trial)
    ensure_files(args.data_dir)  # one-line error before any worker starts
    cfg = TrainConfig.from_dict({**trial.user_attrs["config"], "epochs": args.epochs})
    jobs = [(trial.user_attrs["spec"], cfg.to_dict(), seed, args.data_dir, args.train_limit)
            for seed in range(1, args.seeds + 1)]
    k = min(args.last_k, args.epochs)
    print(f"verifying trial {trial.number} ({trial.user_attrs['params']:,} params): {args.seeds} seeds x "
          f"{args.epochs} epochs on all training images, test set scored every epoch; target "
          f">= {args.target} in each of the last {k}", flush=True)
    procs = min(args.seeds, os.cpu_count() or 1)
    if procs > 1:
        with mp.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_run_seed, jobs)
    else:
        results = [_run_seed(j) for j in jobs]
    ok_all = True
    print(f"{'seed':>4}  {'best':>6}  {'last ' + str(k) + ' test acc':<24} {'min':>6}  result")
    for seed, accs in results:
        last = accs[-k:]
        ok = min(last) >= args.target
        ok_all &= ok
        print(f"{seed:>4}  {max(accs):>6.2f}  {' '.join(f'{a:.2f}' for a in last):<24} {min(last):>6.2f}  "
              f"{'PASS' if ok else 'FAIL'}")
    print("PASS: every seed held the target" if ok_all else "FAIL: not every seed held the target")
    return 0 if ok_all else 1
