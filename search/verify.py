"""`verify`: retrain a trial's architecture on all 60,000 images with several seeds, score the
official test set every epoch, and pass only if every seed holds the target in each of the last K."""
from __future__ import annotations

import multiprocessing as mp
import os

from space.recipe import ConfigError, TrainConfig
from space.target import EPOCH_LIMIT, TARGET_ACC, last_k_for
from storage.studies import get_trial, load_study


def _run_seed(job):
    spec_dict, cfg_dict, seed, data_dir, train_limit = job
    import torch
    torch.set_num_threads(1)
    from search.data import load_mnist, make_split
    from search.train import train
    from space.spec import ArchSpec
    split = make_split(load_mnist(data_dir), final=True, train_limit=train_limit)
    cfg = TrainConfig.from_dict({**cfg_dict, "seed": seed, "threads": 1})
    progress = lambda r: print(f"seed {seed} epoch {r['epoch']:2d}: test {r['test_acc']:.2f} "
                               f"({r['seconds']:.0f}s)", flush=True)  # workers share the terminal
    res = train(ArchSpec.from_dict(spec_dict), cfg, split, on_epoch=progress, quiet=True)
    return seed, res.accs()


def verify(*, study_name: str, storage: str | None = None, trial: str = "best", seeds: int = 3,
           last_k: int | None = None, target: float = TARGET_ACC, epochs: int = EPOCH_LIMIT,
           train_limit: int | None = None, data_dir: str | None = None) -> int:
    """0 when every seed held `target` in each of the last K epochs, else 1."""
    from search.data import ensure_files
    for name, v in (("seeds", seeds), ("epochs", epochs), ("last_k", last_k), ("train_limit", train_limit)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    if not 0 <= target <= 100:
        raise ConfigError(f"--target must be a percentage in [0, 100], got {target!r}")
    study = load_study(study_name=study_name, storage=storage)
    frozen = get_trial(study, trial)
    ensure_files(data_dir)  # one-line error before any worker starts
    cfg = TrainConfig.from_dict({**frozen.user_attrs["config"], "epochs": epochs})
    jobs = [(frozen.user_attrs["spec"], cfg.to_dict(), seed, data_dir, train_limit)
            for seed in range(1, seeds + 1)]
    k = last_k_for(epochs, last_k)
    print(f"verifying trial {frozen.number} ({frozen.user_attrs['params']:,} params): {seeds} seeds x "
          f"{epochs} epochs on all training images, test set scored every epoch; target "
          f">= {target} in each of the last {k}", flush=True)
    procs = min(seeds, os.cpu_count() or 1)
    if procs > 1:
        with mp.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_run_seed, jobs)
    else:
        results = [_run_seed(j) for j in jobs]
    ok_all = True
    print(f"{'seed':>4}  {'best':>6}  {'last ' + str(k) + ' test acc':<24} {'min':>6}  result")
    for seed, accs in results:
        last = accs[-k:]
        ok = min(last) >= target
        ok_all &= ok
        print(f"{seed:>4}  {max(accs):>6.2f}  {' '.join(f'{a:.2f}' for a in last):<24} {min(last):>6.2f}  "
              f"{'PASS' if ok else 'FAIL'}")
    print("PASS: every seed held the target" if ok_all else "FAIL: not every seed held the target")
    return 0 if ok_all else 1
