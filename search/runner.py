"""`search`: create or resume a study and run it with W single-threaded worker processes.

Each worker opens the same storage, so SQLite (one machine) or PostgreSQL (many machines) both
work; the sampler is seeded per worker so workers do not propose the same point, and TPE runs with
constant_liar so running trials steer the others away.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import time
from dataclasses import asdict

import optuna

from search.objective import SearchSettings, make_objective, MODEL6_PARAMS, smallest_spec
from space.spec import count_params
from storage.studies import ArtifactSink, StudyError, open_storage, safe_url, storage_url


def quiet_optuna() -> None:
    """Our own per-epoch lines say what happens; Optuna's INFO lines and its warning with a
    traceback for a trial interrupted by Ctrl-C would bury them. Real errors still raise."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def make_sampler(kind: str, seed: int):
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=8)


def make_pruner(kind: str, epochs: int):
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def settings_from_args(args) -> SearchSettings:
    pareto = args.objective == "pareto"  # Optuna cannot prune multi-objective trials
    return SearchSettings(max_params=args.max_params, epochs=args.epochs, last_k=args.last_k,
                          pareto=pareto, prune=not pareto and args.pruner != "none")


def create_or_resume(args) -> optuna.Study:
    smallest = count_params(smallest_spec())
    if args.max_params <= smallest:
        raise StudyError(f"--max-params {args.max_params:,} admits no model: the smallest this space "
                         f"can build has {smallest:,} parameters")
    if args.last_k < 1 or args.last_k > args.epochs:
        raise StudyError(f"--last-k must be between 1 and --epochs ({args.epochs}), got {args.last_k}")
    if args.n_trials < 1 or args.workers < 1:
        raise StudyError("--n-trials and --workers must be at least 1")
    url = storage_url(args)
    storage = open_storage(url, create=True)
    pareto = args.objective == "pareto"
    directions = ["maximize", "minimize"] if pareto else ["maximize"]
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if args.study_name in existing:
        have = [d.name.lower() for d in existing[args.study_name].directions]
        if have != directions:
            raise StudyError(f"study {args.study_name!r} exists with directions {have}; "
                             f"--objective {args.objective} needs {directions}")
    study = optuna.create_study(study_name=args.study_name, storage=storage, directions=directions,
                                load_if_exists=True)
    if not study.trials and not args.no_enqueue:
        study.enqueue_trial(MODEL6_PARAMS)  # start from the seed's known-good point
    for key, value in asdict(settings_from_args(args)).items():
        study.set_user_attr(key, value)
    return study


def _worker(args, worker: int, n_trials: int) -> bool:
    """Run this worker's share of trials; True when stopped by Ctrl-C."""
    import torch
    quiet_optuna()
    torch.set_num_threads(1)  # one process per core beats one process with many threads
    from search.data import load_mnist, make_split
    url = storage_url(args)
    settings = settings_from_args(args)
    split = make_split(load_mnist(args.data_dir), train_limit=args.train_limit)
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(url),
                              sampler=make_sampler(args.sampler, args.seed + worker),
                              pruner=make_pruner(args.pruner, args.epochs))
    tag = f"[w{worker}] " if args.workers > 1 else ""
    objective = make_objective(settings, split, ArtifactSink(url, args.study_name),
                               log=lambda line: print(tag + line, flush=True))
    try:
        study.optimize(objective, n_trials=n_trials, timeout=args.timeout, catch=())
    except KeyboardInterrupt:
        return True  # Optuna has already marked the running trial FAILED; completed trials are stored
    return False


def _worker_process(args, worker: int, n_trials: int) -> None:
    sys.exit(130 if _worker(args, worker, n_trials) else 0)


def _state_counts(study) -> str:
    from collections import Counter
    from storage.report import trial_kind
    c = Counter(trial_kind(t) for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{v} {k}" for k, v in sorted(c.items()))


def run_search(args) -> None:
    from search.data import ensure_files
    from search.train import TrainConfig
    quiet_optuna()
    TrainConfig(epochs=args.epochs)  # the epoch limit, checked before anything is stored
    ensure_files(args.data_dir)  # bad data: one line now, before any worker starts
    study = create_or_resume(args)
    before = sum(t.state != optuna.trial.TrialState.WAITING for t in study.trials)
    workers = max(1, min(args.workers, args.n_trials))
    args.workers = workers
    shares = [args.n_trials // workers + (i < args.n_trials % workers) for i in range(workers)]
    print(f"study {args.study_name!r} in {safe_url(storage_url(args))}: {before} trials so far; running "
          f"{args.n_trials} more on {workers} worker process(es), 1 thread each", flush=True)
    t0 = time.time()
    interrupted = False
    if workers == 1:
        try:
            interrupted = _worker(args, 0, shares[0])
        except KeyboardInterrupt:  # between trials
            interrupted = True
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_process, args=(args, i, n)) for i, n in enumerate(shares)]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt:
                interrupted = True  # workers got the same SIGINT; wait for them to record it
        interrupted |= any(p.exitcode == 130 for p in procs)
        if any(p.exitcode not in (0, 130) for p in procs):
            print("warning: a worker exited with an error; see its output above", file=sys.stderr)
    study = optuna.load_study(study_name=args.study_name, storage=open_storage(storage_url(args)))
    print(f"{'stopped by Ctrl-C' if interrupted else 'done'} after {time.time() - t0:.0f}s: "
          f"{len(study.trials) - before} new trials; study now has {_state_counts(study)}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = max(complete, key=lambda t: t.values[0])
        print(f"best so far: trial {best.number}, consistency score {best.values[0]:.2f}, "
              f"{best.user_attrs.get('params'):,} params")
    if interrupted:
        raise KeyboardInterrupt
