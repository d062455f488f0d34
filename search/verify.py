"""Retraining a trial's recipe with other seeds: `verify` (all 60,000 images, the official test set
scored every epoch; pass only if every seed holds the target in each of the last K) and the
confirm stage of `find` (the same 50,000 / 10,000 split as the search, validation only)."""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Callable

from search.config import check_counts
from space.recipe import ConfigError, TrainConfig
from space.hold import HOLD_LEVEL, MAX_SEEDS, Decision, check_hold_settings, decide, last_k_minimum, seed_held
from space.target import EPOCH_LIMIT, TARGET_ACC, last_k_for
from storage.db import load_study
from storage.ranking import get_trial


def _ignore_sigint() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_seed(job):
    tag, spec_dict, cfg_dict, seed, data_dir, train_limit, final, weights_path, stream = job
    import torch
    torch.set_num_threads(1)
    from search.data import load_mnist, make_split
    from search.train import train
    from space.spec import ArchSpec
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
        torch.save({"spec": spec_dict, "config": cfg.to_dict(), "state_dict": res.model.state_dict()},
                   weights_path)
    return tag, seed, res.accs(), sum(h["seconds"] for h in res.history), res.device


def retrain_jobs(jobs: list[tuple], *, final: bool, data_dir=None, train_limit: int | None = None,
                 processes: int | None = None,
                 on_done: Callable[[object, int, list[float], float, str], None] | None = None) -> list[tuple]:
    """Run (tag, spec, config, seed, weights_path or None) jobs in one pool of processes of one
    thread each, so several trials' seeds share the workers (confirm on a GPU runs all its
    retrainings at once). on_done(tag, seed, accs, seconds, device) runs in this process as each
    job finishes. Returns the (tag, seed, accs, seconds, device) of every job."""
    stream = "stderr" if sys.stdout is not sys.__stdout__ else "stdout"  # redirected: keep stdout clean
    jobs = [(tag, spec, config, seed, data_dir, train_limit, final, path, stream)
            for tag, spec, config, seed, path in jobs]
    procs = min(len(jobs), processes or os.cpu_count() or 1)
    results = []
    if procs > 1:
        from search import stopping
        # the children ignore Ctrl-C: the parent hears it (a flag, or KeyboardInterrupt where no flag
        # is installed), stops waiting and, leaving the with-block, terminates them (no traceback each)
        with mp.get_context("spawn").Pool(procs, initializer=_ignore_sigint) as pool:
            pending = pool.imap_unordered(_run_seed, jobs)
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
            results.append(_run_seed(j))
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


def until_decided(results: dict[int, list[float]], run: Callable[[list[int]], None], *, k: int, target: float,
                  level: float, min_seeds: int, max_seeds: int) -> Decision:
    """Add seeds until the hold rule (space.hold) decides: first seeds 1..min_seeds (those not in
    `results`), then one at a time. run(seeds) trains them and puts their accuracies in `results`."""
    while True:
        d = decide([last_k_minimum(results[s], k) for s in sorted(results)], target=target, level=level,
                   min_seeds=min_seeds, max_seeds=max_seeds)
        if d.verdict != "MORE":
            return d
        missing = [s for s in range(1, min_seeds + 1) if s not in results]
        if len(results) >= min_seeds:
            print(f"undecided: {d.why}", flush=True)
        run(missing or [max(results) + 1])


def print_table(results: dict[int, list[float]], k: int, target: float | None, eval_name: str = "test") -> None:
    print(f"{'seed':>4}  {'best':>6}  {'last ' + str(k) + ' ' + eval_name + ' acc':<24} {'min':>6}  result")
    for seed, accs in sorted(results.items()):
        last = accs[-k:]
        verdict = "" if target is None else ("held" if seed_held(accs, k, target) else "below")
        print(f"{seed:>4}  {max(accs):>6.2f}  {' '.join(f'{a:.2f}' for a in last):<24} {min(last):>6.2f}  {verdict}")


def verify(*, study_name: str, storage: str | None = None, trial: str = "best", seeds: int = 3,
           last_k: int | None = None, target: float = TARGET_ACC, epochs: int = EPOCH_LIMIT,
           train_limit: int | None = None, data_dir: str | None = None, as_json: bool = False,
           hold_level: float = HOLD_LEVEL, max_seeds: int = MAX_SEEDS) -> int:
    """0 when the model holds `target` in each of the last K epochs by the hold rule (space.hold:
    `seeds` seeds first, one more at a time while undecided, up to `max_seeds`), else 1. as_json:
    the tables go to stderr and one JSON object to stdout."""
    import contextlib
    import json
    import sys
    if as_json:
        with contextlib.redirect_stdout(sys.stderr):
            code, out = _verify(study_name, storage, trial, seeds, last_k, target, epochs, train_limit, data_dir,
                                hold_level, max_seeds)
        print(json.dumps(out))
        return code
    return _verify(study_name, storage, trial, seeds, last_k, target, epochs, train_limit, data_dir,
                   hold_level, max_seeds)[0]


def _verify(study_name, storage, trial, seeds, last_k, target, epochs, train_limit, data_dir, hold_level, max_seeds):
    from search.data import ensure_files
    check_counts(seeds=seeds, epochs=epochs, last_k=last_k, train_limit=train_limit, max_seeds=max_seeds)
    if not 0 <= target <= 100:
        raise ConfigError(f"--target must be a percentage in [0, 100], got {target!r}")
    try:
        check_hold_settings(level=hold_level, min_seeds=seeds, max_seeds=max_seeds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    study = load_study(study_name=study_name, storage=storage)
    frozen = get_trial(study, trial)
    ensure_files(data_dir)  # one-line error before any worker starts
    cfg = TrainConfig.from_dict({**frozen.user_attrs["config"], "epochs": epochs})
    k = last_k_for(epochs, last_k)
    from search.data import training_counts
    from storage.provenance import describe_training, training_record
    images, available = training_counts(data_dir, final=True, train_limit=train_limit)
    print(f"verifying trial {frozen.number} ({frozen.user_attrs['params']:,} params): {seeds} seeds (up to "
          f"{max_seeds} while undecided) on "
          f"{describe_training(final=True, train_limit=train_limit, epochs=epochs, images=images, available=available)}"
          f", test set scored every epoch; "
          f"target >= {target} in each of the last {k}, PASS when P(a new seed holds) >= {hold_level:.0%}",
          flush=True)
    earlier = study.user_attrs.get(f"find:verify:{frozen.number}")
    if earlier:
        print(f"(find verified this trial before: {'PASS' if earlier['passed'] else 'FAIL'} "
              f"on seeds {', '.join(earlier['results'])})")
    devices: dict[str, str] = {}  # where each seed trained, as find's verify rows record it
    results: dict[int, list[float]] = {}
    decision = until_decided(
        results, lambda todo: results.update(retrain_seeds(
            frozen.user_attrs["spec"], cfg.to_dict(), todo, final=True, data_dir=data_dir, train_limit=train_limit,
            on_seed=lambda seed, accs, secs, device: devices.__setitem__(str(seed), device))),
        k=k, target=target, level=hold_level, min_seeds=seeds, max_seeds=max_seeds)
    print_table(results, k, target)
    ok_all = decision.verdict == "PASS"
    hold = decision.to_dict()
    from storage import notes
    run = training_record(final=True, train_limit=train_limit, epochs=epochs, seeds=sorted(results), devices=devices,
                          images=images, available=available)
    notes.add_section(study, frozen.number, notes.VERIFY_HEADING, notes.verify_markdown(
        {str(s): a for s, a in results.items()}, k, target, passed=ok_all, hold=hold,
        title=f"`verify` retrained it on {run['text']}; the official test set scored every epoch."))
    print(f"{decision.verdict}: {decision.why} ({len(results)} seeds, each a test-set use)")
    return (0 if ok_all else 1), {"trial": frozen.number, "params": frozen.user_attrs["params"], "epochs": epochs,
                                  "k": k, "target": target, "passed": ok_all, "hold": hold,
                                  "results": {str(s): a for s, a in results.items()}, "devices": devices,
                                  "provenance": run}
