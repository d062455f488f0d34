"""The retraining pool: a trial's recipe trained again with other seeds, each job in a process of
one thread, several trials' seeds sharing the workers. find's confirm stage (the same 50,000 /
10,000 split as the search, validation only), find's verify stage and the `verify` command (all
60,000 images, the official test set scored every epoch) run their seeds here."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Callable

from space.recipe import TrainConfig


def ignore_sigint() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_seed(job):
    tag, spec_dict, cfg_dict, seed, data_dir, train_limit, final, weights_path, stream = job
    import torch
    torch.set_num_threads(1)
    from search.data import load_mnist, make_split
    from search.train import train
    from space.spec import ArchSpec
    from storage.records import WeightsFile
    split = make_split(load_mnist(data_dir), final=final, train_limit=train_limit)
    cfg = TrainConfig.from_dict({**cfg_dict, "seed": seed, "threads": 1})
    ev = split.eval_name
    name = f"trial {tag} seed {seed}" if tag is not None else f"seed {seed}"
    progress = lambda r: print(f"{name} epoch {r['epoch']:2d}: {ev} {r[ev + '_acc']:.2f} "
                               f"({r['seconds']:.0f}s)", flush=True,
                               file=sys.stderr if stream == "stderr" else sys.stdout)  # workers share the terminal
    res = train(ArchSpec.from_dict(spec_dict), cfg, split, on_epoch=progress, quiet=True)
    if weights_path:
        Path(weights_path).parent.mkdir(parents=True, exist_ok=True)
        WeightsFile(spec=spec_dict, config=cfg.to_dict(), state_dict=res.model.state_dict()).save(weights_path)
    return tag, seed, res.accs(), sum(h["seconds"] for h in res.history), res.device


def seed_job(tag, spec: dict, config: dict, seed: int, weights_path: str | None, *, final: bool, data_dir=None,
             train_limit: int | None = None) -> tuple:
    """One job of the pool as run_seed takes it: where its progress lines go is decided here (a
    redirected stdout is kept clean for --json; the lines go to stderr then)."""
    stream = "stderr" if sys.stdout is not sys.__stdout__ else "stdout"
    return tag, spec, config, seed, data_dir, train_limit, final, weights_path, stream


def default_processes() -> int:
    """Retraining's processes when none are asked for: one per core (one thread each)."""
    return os.cpu_count() or 1


def retrain_jobs(jobs: list[tuple], *, final: bool, data_dir=None, train_limit: int | None = None,
                 processes: int | None = None,
                 on_done: Callable[[object, int, list[float], float, str], None] | None = None) -> list[tuple]:
    """Run (tag, spec, config, seed, weights_path or None) jobs in one pool of processes of one
    thread each, so several trials' seeds share the workers (confirm on a GPU runs all its
    retrainings at once). on_done(tag, seed, accs, seconds, device) runs in this process as each
    job finishes. Returns the (tag, seed, accs, seconds, device) of every job."""
    jobs = [seed_job(tag, spec, config, seed, path, final=final, data_dir=data_dir, train_limit=train_limit)
            for tag, spec, config, seed, path in jobs]
    procs = min(len(jobs), processes or default_processes())
    results = []
    if procs > 1:
        from search import stopping
        # the children ignore Ctrl-C: the parent hears it (a flag, or KeyboardInterrupt where no flag
        # is installed), stops waiting and, leaving the with-block, terminates them (no traceback each)
        from search.procs import context
        with context().Pool(procs, initializer=ignore_sigint) as pool:
            pending = pool.imap_unordered(run_seed, jobs)
            for _ in jobs:
                while True:
                    stopping.check()
                    try:
                        r = pending.next(timeout=0.5)
                        break
                    except mp.TimeoutError:
                        continue
                results.append(r)
                if on_done:
                    on_done(*r)
    else:
        for j in jobs:
            results.append(run_seed(j))
            if on_done:
                on_done(*results[-1])
    return results


def retrain_seeds(spec: dict, config: dict, seeds: list[int], *, final: bool, data_dir=None,
                  train_limit: int | None = None, processes: int | None = None,
                  weights_path: Callable[[int], str] | None = None,
                  on_seed: Callable[[int, list[float], float, str], None] | None = None) -> dict[int, list[float]]:
    """{seed: per-epoch accuracies} of the recipe retrained once per seed, in parallel processes
    of one thread each. final: all 60,000 scored on test; otherwise the search's split on val.
    on_seed(seed, accs, seconds, device) runs in this process as each seed finishes, with its
    training seconds (one thread each: core-seconds) and where it trained; find stores them, so an
    interrupted stage keeps its finished seeds and its cost."""
    jobs = [(None, spec, config, seed, weights_path(seed) if weights_path else None) for seed in seeds]
    done = (lambda tag, seed, accs, secs, device: on_seed(seed, accs, secs, device)) if on_seed else None
    results = retrain_jobs(jobs, final=final, data_dir=data_dir, train_limit=train_limit,
                           processes=processes, on_done=done)
    return {seed: accs for _, seed, accs, _, _ in results}
