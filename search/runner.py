"""`search`: create or resume a study and run it with W single-threaded worker processes.

Each worker opens the same storage, so SQLite (one machine) or PostgreSQL (many machines) both
work. The space a study was created with is stored in it (user attribute "space"); resuming with a
different one is refused before anything is written. Samplers are seeded per worker and per
invocation (by the number of trials already there), so neither parallel workers nor a resumed
study re-propose the same points; TPE runs with constant_liar so running trials steer the others.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

import optuna

from search import stopping
from search.procs import context as procs_context
from search.config import SearchConfig, check_protocol, make_pruner, make_sampler
from space.searchspace import MODEL6_POINT, SearchSpace, space_diff
from space.spec import count_params
from storage.artifacts import ArtifactSink
from storage.db import (StudyError, creation_lock, heartbeat_grace, open_storage, safe_url, storage_outage,
                        storage_url)
from storage.ranking import best_trial
from storage import records
from storage.records import Prior, TrialRecord


def install_stop_signals() -> None:
    """Ctrl-C and SIGTERM stop cleanly: they set a flag that the training loop and the waits
    check, so no storage write is cut in half (search/stopping.py says why)."""
    stopping.install()


def quiet_optuna() -> None:
    """Our own per-epoch lines say what happens; Optuna's INFO lines and its warning with a
    traceback for a trial interrupted by Ctrl-C would bury them. Real errors still raise."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _url(config: SearchConfig) -> str:
    return storage_url(study_name=config.study_name, storage=config.storage)


def check_resume(config: SearchConfig, summary, budget_may_differ: bool = False) -> None:
    """Refuse, before writing anything, to resume a study under another protocol (epochs, K, train
    limit, objective, budget: search.config.PROTOCOL) or space. budget_may_differ: find reading a
    finished search, whose --max-params only filters the candidates."""
    check_protocol(config.study_name, records.StudySettings.of(summary.user_attrs), config.protocol(),
                   skip=("max_params",) if budget_may_differ else ())
    have = [d.name.lower() for d in summary.directions]
    want = ["maximize", "minimize"] if config.pareto else ["maximize"]
    if have != want:
        raise StudyError(f"study {config.study_name!r} exists with directions {have}; "
                         f"--objective {config.objective} needs {want}")
    stored = records.StudySettings.of(summary.user_attrs).space
    if stored is None:
        raise StudyError(f"study {config.study_name!r} has no stored search space (made by an older "
                         f"mnist-nas); start a new study")
    try:
        stored_norm = SearchSpace.from_dict(stored).to_dict()
    except Exception:
        stored_norm = stored
    diff = space_diff(stored_norm, config.space.to_dict())
    if diff:
        more = f" (and {len(diff) - 2} more)" if len(diff) > 2 else ""
        raise StudyError(f"study {config.study_name!r} was sampled from another space: "
                         f"{'; '.join(diff[:2])}{more}; resume with that space (mnist-nas report shows it) "
                         f"or use a new --study-name")


def load_checked(config: SearchConfig, budget_may_differ: bool = False) -> optuna.Study | None:
    """The existing study, checked as a resume would be (protocol, space), without writing to it;
    None when the storage or the study does not exist yet."""
    try:
        storage = open_storage(_url(config))  # read-only: refuses a missing SQLite file, creates no tables
    except StudyError:
        return None
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if config.study_name not in summaries:
        return None
    check_resume(config, summaries[config.study_name], budget_may_differ)
    return optuna.load_study(study_name=config.study_name, storage=storage)


def create_or_resume(config: SearchConfig) -> optuna.Study:
    with creation_lock(_url(config)):
        return _create_or_resume(config)


def _create_or_resume(config: SearchConfig) -> optuna.Study:
    smallest = count_params(config.space.smallest())
    if config.max_params <= smallest:
        raise StudyError(f"--max-params {config.max_params:,} admits no model: the smallest this space "
                         f"can build has {smallest:,} parameters")
    # earlier studies are opened before anything is written: a bad --warm-start changes nothing
    warm = load_warm_studies(config.warm_from) if config.warm_start else []
    storage = open_storage(_url(config), create=True)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if config.study_name in existing:
        check_resume(config, existing[config.study_name])
    directions = ["maximize", "minimize"] if config.pareto else ["maximize"]
    study = optuna.create_study(study_name=config.study_name, storage=storage, directions=directions,
                                load_if_exists=True)
    if records.SPACE not in study.user_attrs:
        study.set_user_attr(records.SPACE, config.space.to_dict())
    new = not study.trials
    if new and config.enqueue and not config.space.outside(MODEL6_POINT):
        # start from the seed's known-good point where it fits: over the budget it would only be
        # refused, after Optuna warned that its widths are outside the budget-capped ranges
        model6 = config.space.params_of(MODEL6_POINT)
        if model6 < config.max_params:
            study.enqueue_trial(MODEL6_POINT)
        else:
            print(f"model6 ({model6:,} params) is not enqueued: not under --max-params {config.max_params:,}",
                  flush=True)
    for point in config.start_points:  # the user's known-good points; a point already there is not run twice
        study.enqueue_trial(point, skip_if_exists=True)
    if new and config.warm_start:
        enqueue_prior(study, config, warm)
    config.stored_settings().save(study)
    stopped = retry_stopped_trials(study)
    if stopped:
        print(f"retrying {len(stopped)} trial(s) stopped by Ctrl-C or SIGTERM before, with the same parameters: "
              f"trial(s) {', '.join(map(str, stopped))}", flush=True)
    from storage.notes import refresh_study_note
    refresh_study_note(study)
    return study


def enqueue_prior(study: optuna.Study, config: SearchConfig, warm: list) -> list:
    """A new study's first trials: the service's prior and --warm-start's studies, scaled to the
    budget (search/prior.py). Where they came from is stored ("prior") for report and the note."""
    from search.prior import prior_points, warm_points
    points = prior_points(config.space, config.max_params)
    points += warm_points(config.space, config.max_params, warm)
    # at most half the trial budget (at least one): the sampler keeps room to find its own way
    points = points[:max(1, config.n_trials // 2)]
    for p in points:
        study.enqueue_trial(p.point, user_attrs=records.trial_attrs(start_point=p.describe()), skip_if_exists=True)
    records.save(study, Prior.from_stored({"warm_from": list(config.warm_from), "points": [p.to_dict() for p in points]}))
    if points:
        print(f"start points: {len(points)} from what earlier studies learnt ("
              + "; ".join(p.describe() for p in points) + ")", flush=True)
    return points


def load_warm_studies(urls) -> list[optuna.Study]:
    """The studies --warm-start names: 'URL' (every study in it) or 'URL#name'."""
    from storage.db import open_storage
    studies = []
    for item in urls:
        url, _, name = item.partition("#")
        try:
            storage = open_storage(url)
            names = [name] if name else [s.study_name for s in storage.get_all_studies()]
            studies += [optuna.load_study(study_name=n, storage=storage) for n in names]
        except Exception as e:  # a bad URL or name: one line, before anything is written
            raise StudyError(f"--warm-start {item}: cannot open ({type(e).__name__}: {str(e)[:120]})") from None
    return studies


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def budget_counts(study: optuna.Study, run: str | None = None) -> tuple[int, int, int, int]:
    """(finished, running, pending retries, running elsewhere) from one read of the study. Pending
    retries are dead or stopped trials' retries still WAITING (marked with system attr
    failed_trial). Running elsewhere: RUNNING trials not started by this run's workers (`run`, see
    RUN_KEY). One read, not one per state: between the count and a trial's creation two workers can
    both see room, and every query in that window widens it (CI saw 11 trials of 10)."""
    finished = running = retries = elsewhere = 0
    for t in study.get_trials(deepcopy=False):
        finished += t.state in FINISHED
        running += t.state == optuna.trial.TrialState.RUNNING
        elsewhere += t.state == optuna.trial.TrialState.RUNNING and t.system_attrs.get(RUN_KEY) != run
        retries += t.state == optuna.trial.TrialState.WAITING and "failed_trial" in t.system_attrs
    return finished, running, retries, elsewhere


RUN_KEY = "mnist_nas:run"  # trial system attribute: the search (or worker) run whose process runs it


def new_run_id() -> str:
    """One search invocation's id, shared by its worker processes (a `worker` has its own)."""
    import uuid
    return uuid.uuid4().hex[:12]


def tagged(objective, run: str):
    """The objective, first marking its trial as this run's, so a worker waiting for the budget's
    last trials can tell its siblings' trials (which end with this run) from trials run elsewhere."""
    def run_trial(trial: optuna.Trial):
        trial.storage.set_trial_system_attr(trial._trial_id, RUN_KEY, run)
        return objective(trial)
    return run_trial


def retry_stopped_trials(study: optuna.Study) -> list[int]:
    """Enqueue, with the same parameters, every trial stopped by Ctrl-C or SIGTERM (FAIL, user attr
    "stopped") that has no retry yet, as Optuna's heartbeat callback does for a killed worker's
    trial: WAITING, system attrs failed_trial (the first trial of the chain) and retry_history. A
    retry runs even when the budget is full (budget_counts counts it). Returns the numbers of the
    trials retried. Called when a study is resumed, under the creation lock."""
    trials = study.get_trials(deepcopy=False)
    have_retry = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retried = []
    for t in trials:
        if t.state != optuna.trial.TrialState.FAIL or TrialRecord.of(t).stopped is None or t.number in have_retry:
            continue
        history = list(t.system_attrs.get("retry_history", [])) + [t.number]
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=t.params, distributions=t.distributions,
            system_attrs={"failed_trial": t.system_attrs.get("failed_trial", t.number), "retry_history": history}))
        retried.append(t.number)
    return retried


STORAGE_OUTAGE_LIMIT = 600  # seconds a worker waits for its database server to come back


def _run_until_budget(study: optuna.Study, objective, config: SearchConfig, poll: float = 2.0,
                      run: str | None = None, log=print, until=None) -> None:
    """Start one trial at a time while the study's finished plus running trials are under its
    budget: workers anywhere share one count. Two workers that check at the same moment can both
    start, so a study can overshoot by (workers - 1) trials, and by as many again when dead
    trials' retries must still run (see below); run_search reports it.

    While the budget is covered only because trials are RUNNING, wait rather than leave: they are
    live workers' (that finish them), or dead ones' (a killed search: their heartbeats stop, they
    are failed after the grace period and their retries wait here to be run). Waiting for this
    run's own sibling workers' last trials is the normal end of a run and says nothing; waiting for
    trials running elsewhere is said once, in plain words.

    until: None, or an object whose why(study) says (a sentence) when the search should pause
    before its next trial (find's "a fresh candidate to confirm"); trials running finish first."""
    from optuna.storages import fail_stale_trials
    deadline = time.time() + config.timeout if config.timeout else None
    said = seen_elsewhere = False
    away_since = None
    while True:
        stopping.check()  # between trials: nothing is being written
        try:
            fail_stale_trials(study)  # a dead trial is failed and its retry enqueued before we count
            # A dead trial's retry is run even when the budget has filled meanwhile: Optuna fails a
            # stale trial and enqueues its retry in two steps, and a worker counting in between saw
            # room and started a fresh trial (CI: a SIGKILLed search resumed with a retry left
            # WAITING for ever). Enqueued start points are not retries: they wait for a budget.
            finished, running, retries, elsewhere = budget_counts(study, run)
            if finished >= config.n_trials and not retries:
                return
            if until is not None and until.why(study):
                return
            if deadline is not None and time.time() >= deadline:
                return
            if not retries and finished + running >= config.n_trials:
                # a sibling's trial is tagged a moment after it is created: say so only when trials
                # elsewhere are seen on two checks in a row
                if elsewhere and seen_elsewhere and not said:
                    log(f"the budget of {config.n_trials} trial{'s' * (config.n_trials != 1)} is covered; "
                        f"waiting for {elsewhere} trial(s) "
                        f"running elsewhere to end (another search or worker on this study; if one's process "
                        f"was killed, it is marked failed after {heartbeat_grace()} s without a heartbeat and "
                        f"retried here)")
                    said = True
                seen_elsewhere = elsewhere > 0
                stopping.sleep(poll)
                continue
            said = seen_elsewhere = False
            study.optimize(objective, n_trials=1, catch=())
            away_since = None
        except Exception as e:
            cause = storage_outage(e)
            if cause is None:
                raise
            # The server is away (restarting, network): the trial in flight, if any, has failed or
            # will be failed as stale and retried; wait for the server instead of dying.
            away_since = away_since or time.time()
            if time.time() - away_since > STORAGE_OUTAGE_LIMIT:
                raise StudyError(f"storage unreachable for {STORAGE_OUTAGE_LIMIT} s: {e}") from None
            why = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(cause).__name__])[0]
            print(f"storage unreachable ({why}); retrying in {poll * 2:.0f}s", flush=True)
            stopping.sleep(poll * 2)


class TrialBar:
    """One tqdm bar per worker process on a terminal (its own line, `position` = worker number):
    trial, epoch, batches done, the last validation accuracy. The per-epoch lines still print
    (through tqdm.write, above the bars), so a scrolled-back terminal keeps the record."""

    def __init__(self, worker: int, tag: str):
        from tqdm import tqdm
        self.tag, self.trial = tag, None
        self.bar = tqdm(position=worker, leave=False, unit="batch", dynamic_ncols=True, mininterval=0.5,
                        desc=f"{tag}starting")

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.bar.reset(total=steps)
        self.bar.set_description(f"{self.tag}trial {self.trial} epoch {epoch}/{epochs}", refresh=False)

    def step(self) -> None:
        self.bar.update()

    def end_epoch(self, record: dict) -> None:
        acc = record.get("val_acc", record.get("test_acc"))
        self.bar.set_postfix_str(f"val {acc:.2f}", refresh=False)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def _worker(config: SearchConfig, worker: int, seed: int, run: str | None = None, until=None) -> bool:
    """Run trials until the study's budget is met; True when stopped by Ctrl-C or SIGTERM. run: the
    id of the search this worker belongs to (RUN_KEY)."""
    import torch
    install_stop_signals()
    quiet_optuna()
    torch.set_num_threads(1)  # one process per core beats one process with many threads
    from search.data import load_mnist, make_split
    from search.objective import make_objective
    url = _url(config)
    split = make_split(load_mnist(config.data_dir), train_limit=config.train_limit)
    study = optuna.load_study(study_name=config.study_name, storage=open_storage(url),
                              sampler=make_sampler(config.sampler, seed),
                              pruner=make_pruner(config.pruner, config.epochs))
    tag = f"[w{worker}] " if config.workers > 1 else ""
    # a bar per worker on a terminal; piped or logged output keeps plain per-epoch lines
    bar = TrialBar(worker, tag) if sys.stderr.isatty() else None
    log = (lambda line: bar.write(tag + line)) if bar else (lambda line: print(tag + line, flush=True))
    run = run or new_run_id()
    objective = tagged(make_objective(config, split, ArtifactSink(url, config.study_name), progress=bar, log=log),
                       run)
    try:
        _run_until_budget(study, objective, config, run=run, log=log, until=until)
    except KeyboardInterrupt:
        return True  # Optuna has already marked the running trial FAILED; completed trials are stored
    finally:
        if bar:
            bar.close()
    return False


def _worker_process(config: SearchConfig, worker: int, seed: int, run: str, until=None) -> None:
    sys.exit(130 if _worker(config, worker, seed, run, until) else 0)


def _ran(study) -> int:
    """Trials that started: an enqueued start point or retry still WAITING is not a new trial."""
    return sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))


def _state_counts(study) -> str:
    from collections import Counter
    from storage.report import trial_kind
    c = Counter(trial_kind(t) for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{v} {k}" for k, v in sorted(c.items()))


def run_worker(config: SearchConfig) -> optuna.Study:
    """Join an existing study (from any machine) with one worker until its budget is met."""
    install_stop_signals()
    quiet_optuna()
    from search.data import ensure_files
    ensure_files(config.data_dir)
    storage = open_storage(_url(config))  # read-only check first: never creates a schema
    study = optuna.load_study(study_name=config.study_name, storage=storage)
    with creation_lock(_url(config)):
        stopped = retry_stopped_trials(study)
    if stopped:
        print(f"retrying {len(stopped)} trial(s) stopped by Ctrl-C or SIGTERM before, with the same parameters: "
              f"trial(s) {', '.join(map(str, stopped))}", flush=True)
    before = len(study.trials)
    seed = config.seed + 7919 * before + os.getpid()
    print(f"worker joins study {config.study_name!r} in {safe_url(_url(config))}: {finished_count(study)} "
          f"finished trials of a budget of {config.n_trials}", flush=True)
    interrupted = _worker(config, 0, seed)
    study = optuna.load_study(study_name=config.study_name, storage=open_storage(_url(config)))
    print(f"{'stopped by ' + stopping.cause() if interrupted else 'done'}: study now has {_state_counts(study)}", flush=True)
    if interrupted:
        raise KeyboardInterrupt
    return study


def run_search(config: SearchConfig, until=None) -> optuna.Study:
    """Run trials until the study (created if new) holds `config.n_trials` finished trials, counted
    across all workers and invocations, or until `until` (see _run_until_budget) pauses it; returns
    the study.
    Raises KeyboardInterrupt after a clean stop on Ctrl-C."""
    from search.data import ensure_files
    install_stop_signals()
    quiet_optuna()
    ensure_files(config.data_dir)  # bad data: one line now, before any worker starts
    study = create_or_resume(config)
    before = _ran(study)
    done, _, retries, _ = budget_counts(study)
    remaining = max(config.n_trials - done, retries)  # a dead trial's retry still runs
    if remaining <= 0:
        print(f"study {config.study_name!r} already has {done} finished trials, its budget is "
              f"--n-trials {config.n_trials}: nothing to run (raise --n-trials to run more)", flush=True)
        return study
    workers = max(1, min(config.workers, remaining))
    config = dataclasses.replace(config, workers=workers)  # what runs, as the header and worker tags say
    # a different sampler seed per worker and per invocation: a resumed study explores anew
    seeds = [config.seed + 7919 * before + i for i in range(workers)]
    print(f"study {config.study_name!r} in {safe_url(_url(config))}: {done} finished trials of a budget of "
          f"{config.n_trials}; running up to {remaining} more on {workers} worker process(es), 1 thread each\n"
          + config.header(), flush=True)
    t0 = time.time()
    interrupted = False
    run = new_run_id()
    if workers == 1:
        try:
            interrupted = _worker(config, 0, seeds[0], run, until)
        except KeyboardInterrupt:  # between trials
            interrupted = True
    else:
        ctx = procs_context()
        procs = [ctx.Process(target=_worker_process, args=(config, i, s, run, until)) for i, s in enumerate(seeds)]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.2)
            if stopping.requested() and not interrupted:
                interrupted = True
                # a signal to the parent alone reaches the workers too: the same one, so each
                # worker's line names what stopped it (SIGTERM was reported as Ctrl-C before)
                sig = signal.SIGTERM if stopping.cause() == "SIGTERM" else signal.SIGINT
                for p in procs:
                    if p.is_alive() and p.pid:
                        try:
                            os.kill(p.pid, sig)
                        except ProcessLookupError:
                            pass  # ended meanwhile
        interrupted |= any(p.exitcode == 130 for p in procs)
        if any(p.exitcode not in (0, 130) for p in procs):
            print("warning: a worker exited with an error; see its output above", file=sys.stderr)
    study = optuna.load_study(study_name=config.study_name, storage=open_storage(_url(config)))
    over = max(0, finished_count(study) - config.n_trials)
    paused = None if interrupted or until is None or finished_count(study) >= config.n_trials else until.why(study)
    print(f"{'stopped by ' + stopping.cause() if interrupted else 'paused' if paused else 'done'} after "
          f"{time.time() - t0:.0f}s: {_ran(study) - before} new trials; study now has {_state_counts(study)}"
          + (f" ({over} over the budget: workers that started at the same moment, or dead trials' retries)"
             if over else ""))
    if paused:
        print(f"paused: {paused}", flush=True)
    from storage.notes import refresh_study_note
    refresh_study_note(study)
    best = best_trial(study)
    if best is not None:
        print(f"best so far: trial {best.number}, consistency score {best.values[0]:.2f}, "
              f"{TrialRecord.of(best).params:,} params")
    if interrupted:
        raise KeyboardInterrupt
    return study
