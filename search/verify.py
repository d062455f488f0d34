"""`verify`: a trial's recipe retrained from scratch on all 60,000 images with seeds from the
retraining pool (search/retrain.py), the official test set scored every epoch; PASS by the hold rule
(space.hold). until_decided (add seeds until the rule decides) and print_table (the per-seed table)
are shared with find's verify stage."""
from __future__ import annotations

from typing import Callable

from search.config import check_counts
from search.retrain import default_processes, retrain_seeds
from space.recipe import ConfigError, TrainConfig
from space.hold import HOLD_LEVEL, MAX_SEEDS, Decision, check_hold_settings, decide, last_k_minimum, seed_held
from space.target import EPOCH_LIMIT, TARGET_ACC, last_k_for
from storage.db import load_study
from storage.ranking import get_trial
from storage.records import FindRecord, HoldEstimate, StudySettings, TrialRecord, VerifyCommandRun, save, stored_seeds


def until_decided(results: dict[int, list[float]], run: Callable[[list[int]], None], *, k: int, target: float,
                  level: float, min_seeds: int, max_seeds: int, at_once: int) -> Decision:
    """Add seeds until the hold rule (space.hold) decides: first seeds 1..min_seeds (those not in
    `results`), at_once of them at a time (the processes that train side by side), then one at a
    time. run(seeds) trains them and puts their accuracies in `results`. The rule is asked after
    every batch, so a seed below the target ends the verdict before the next batch meets the test
    set (find-3400, 2026-11-30: with one worker, seed 3 trained after seed 2 had already failed)."""
    while True:
        d = decide([last_k_minimum(results[s], k) for s in sorted(results)], target=target, level=level,
                   min_seeds=min_seeds, max_seeds=max_seeds)
        if d.verdict != "MORE":
            return d
        missing = [s for s in range(1, min_seeds + 1) if s not in results]
        if len(results) >= min_seeds:
            print(f"undecided: {d.why}", flush=True)
        run(missing[:max(1, at_once)] or [max(results) + 1])


def print_table(results: dict[int, list[float]], k: int, target: float | None, eval_name: str = "test") -> None:
    print(f"{'seed':>4}  {'best':>6}  {'last ' + str(k) + ' ' + eval_name + ' acc':<24} {'min':>6}  result")
    for seed, accs in sorted(results.items()):
        last = accs[-k:]
        verdict = "" if target is None else ("held" if seed_held(accs, k, target) else "below")
        print(f"{seed:>4}  {max(accs):>6.2f}  {' '.join(f'{a:.2f}' for a in last):<24} {min(last):>6.2f}  {verdict}")


def verify(*, study_name: str, storage: str | None = None, trial: str = "best", seeds: int = 3,
           last_k: int | None = None, target: float = TARGET_ACC, epochs: int | None = None,
           train_limit: int | None = None, data_dir: str | None = None, as_json: bool = False,
           hold_level: float = HOLD_LEVEL, max_seeds: int = MAX_SEEDS) -> int:
    """0 when the model holds `target` in each of the last K epochs by the hold rule (space.hold:
    `seeds` seeds first, one more at a time while undecided, up to `max_seeds`), else 1. as_json:
    the tables go to stderr and one JSON object to stdout. epochs, last_k and train_limit left as
    None follow the study's protocol (study_protocol), as find's verify stage does."""
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


def study_protocol(settings: StudySettings, *, epochs: int | None, last_k: int | None,
                   train_limit: int | None) -> tuple[int, int | None, int | None, str]:
    """(epochs, last_k, train_limit, what came from the study): each value given wins; each left as
    None is the study's (what its trials were scored on; find's verify stage retrains that way
    too), else the target's 15 epochs, K = 3 and every image. K never exceeds the epochs run
    (space.target.last_k_for).

    >>> quick = StudySettings({"epochs": 3, "last_k": 1, "train_limit": 5000})
    >>> study_protocol(quick, epochs=None, last_k=None, train_limit=None)
    (3, 1, 5000, '3 epochs, K = 1, the first 5,000 training images')
    >>> study_protocol(quick, epochs=15, last_k=None, train_limit=None)
    (15, 1, 5000, 'K = 1, the first 5,000 training images')
    >>> study_protocol(StudySettings({}), epochs=None, last_k=None, train_limit=None)
    (15, None, None, 'nothing (the flags given, else 15 epochs, K = 3, every image)')
    """
    taken = []
    if epochs is None and settings.get("epochs") is not None:
        epochs = settings["epochs"]
        taken.append(f"{epochs} epochs")
    if last_k is None and settings.get("last_k") is not None:
        last_k = settings["last_k"]
        taken.append(f"K = {last_k}")
    if train_limit is None and settings.get("train_limit") is not None:
        train_limit = settings["train_limit"]
        taken.append(f"the first {train_limit:,} training images")
    where = ", ".join(taken) or f"nothing (the flags given, else {EPOCH_LIMIT} epochs, K = 3, every image)"
    return (EPOCH_LIMIT if epochs is None else epochs), last_k, train_limit, where


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
    epochs, last_k, train_limit, protocol = study_protocol(StudySettings.of(study), epochs=epochs, last_k=last_k,
                                                           train_limit=train_limit)
    frozen = get_trial(study, trial)
    record = TrialRecord.of(frozen)
    ensure_files(data_dir)  # one-line error before any worker starts
    cfg = TrainConfig.from_dict({**record.config, "epochs": epochs})
    k = last_k_for(epochs, last_k)
    from search.data import training_counts
    from storage.provenance import describe_training, training_record
    images, available = training_counts(data_dir, final=True, train_limit=train_limit)
    print(f"verifying trial {frozen.number} ({record.params:,} params): {seeds} seeds (up to "
          f"{max_seeds} while undecided) on "
          f"{describe_training(final=True, train_limit=train_limit, epochs=epochs, images=images, available=available)}"
          f", test set scored every epoch; "
          f"target >= {target} in each of the last {k}, PASS when P(a new seed holds) >= {hold_level:.0%}"
          f"\nfrom the study's protocol: {protocol} (--epochs, --last-k and --train-limit change it)", flush=True)
    earlier = FindRecord.of(study).verify(frozen.number)
    if earlier is not None:
        print(f"(find verified this trial before: {earlier.verdict} "
              f"on seeds {', '.join(map(str, earlier.results))})")
    devices: dict[int, str] = {}  # where each seed trained, as find's verify rows record it
    results: dict[int, list[float]] = {}
    processes = default_processes()  # the seeds of a batch train side by side
    # every seed is counted before it meets the test set (report's test-set uses), as find's are
    from datetime import datetime, timezone
    uses = VerifyCommandRun(trial=frozen.number, started=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                            met=[])

    def run_seeds(todo: list[int]) -> None:
        nonlocal uses
        uses = uses.replace(met=sorted(set(uses.met) | set(todo)))
        save(study, uses)
        results.update(retrain_seeds(
            record.spec, cfg.to_dict(), todo, final=True, data_dir=data_dir, train_limit=train_limit,
            processes=processes, on_seed=lambda seed, accs, secs, device: devices.__setitem__(seed, device)))

    decision = until_decided(results, run_seeds, k=k, target=target, level=hold_level, min_seeds=seeds,
                             max_seeds=max_seeds, at_once=processes)
    save(study, uses.replace(verdict=decision.verdict))
    print_table(results, k, target)
    ok_all = decision.verdict == "PASS"
    hold = HoldEstimate.of(decision)
    from storage import notes
    run = training_record(final=True, train_limit=train_limit, epochs=epochs, seeds=sorted(results), devices=devices,
                          images=images, available=available)
    notes.add_section(study, frozen.number, notes.VERIFY_HEADING, notes.verify_markdown(
        results, k, target, passed=ok_all, hold=hold,
        title=f"`verify` retrained it on {run.text}; the official test set scored every epoch."))
    print(f"{decision.verdict}: {decision.why} ({len(results)} seeds, each a test-set use)")
    return (0 if ok_all else 1), {"trial": frozen.number, "params": record.params, "epochs": epochs,
                                  "k": k, "target": target, "passed": ok_all, "hold": hold.to_stored(),
                                  "results": stored_seeds(results), "devices": stored_seeds(devices),
                                  "provenance": run.to_stored()}
