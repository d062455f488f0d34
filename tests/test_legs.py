"""find in legs: when the search pauses for a candidate (search.find.FreshCandidate), the default
bar below the target (space.target), and the depth-first race that confirms only until something
can be verified (search.race). Fast: an in-memory study, no training."""
import optuna
import pytest

from search.config import SearchConfig
from search.find import FindConfig, FreshCandidate
from search.race import Race
from space.target import default_bar
from storage import records
from storage.records import ConfirmRow, VerifyRow, Winner


def _study(trials):
    """A study whose COMPLETE trials have these (score, params)."""
    study = optuna.create_study(direction="maximize")
    for score, params in trials:
        t = study.ask()
        t.set_user_attr("params", params)
        study.tell(t, score)
    return study


def _confirmed(study, trial, epochs=15, k=3, results=None, params=1):
    results = {10001: [99.3], 10002: [99.3]} if results is None else results
    scores = [99.3, *(min(a) for a in results.values())]
    records.save(study, ConfirmRow(trial=trial, params=params, epochs=epochs, k=k, results=results, scores=scores,
                                   robust=min(scores)))


def test_a_trial_at_or_above_the_bar_under_the_budget_and_unconfirmed_pauses_the_search():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study([(99.20, 3000), (99.30, 3500), (99.40, 4000), (99.25, 3900)])
    rule = FreshCandidate(bar=99.25, max_params=4000, epochs=15, k=3, seeds=(10001, 10002))
    # trial 2 is at the budget (fewer than 4,000 is the rule), trial 0 below the bar
    assert [t.number for t in rule.fresh(study)] == [1, 3]
    assert rule.why(study).startswith("trial 1 scores 99.30, at or above the bar 99.25")
    _confirmed(study, 1)
    assert [t.number for t in rule.fresh(study)] == [3]
    _confirmed(study, 3, epochs=5)  # a row made under another protocol does not count as confirmed
    assert [t.number for t in rule.fresh(study)] == [3]
    _confirmed(study, 3)
    assert rule.fresh(study) == []
    # confirmed at or above the bar, verify not done: still work before any more search
    assert rule.unverified(study) == [1, 3] and rule.why(study).startswith("trial 1 is confirmed")
    records.save(study, VerifyRow(trial=1, epochs=15, k=3, target=99.4, seeds=3, results={1: [99.1]}, passed=False))
    records.save(study, VerifyRow(trial=3, epochs=15, k=3, target=99.4, seeds=3, results={1: [99.1]}, passed=False))
    assert rule.unverified(study) == [] and rule.why(study) is None  # both failed: search on
    # why() runs before every search trial of every worker: one read of the trials, one of the records
    reads = {"trials": 0, "attrs": 0}
    get_trials, storage_attrs = study.get_trials, study._storage.get_study_user_attrs
    study.get_trials = lambda *a, **kw: (reads.__setitem__("trials", reads["trials"] + 1), get_trials(*a, **kw))[1]
    study._storage.get_study_user_attrs = lambda *a: (reads.__setitem__("attrs", reads["attrs"] + 1),
                                                      storage_attrs(*a))[1]
    assert rule.why(study) is None and reads == {"trials": 1, "attrs": 1}


def test_a_confirm_missing_seeds_of_this_run_is_fresh_unless_it_is_below_the_bar_already():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study([(99.30, 3000), (99.30, 3000)])
    _confirmed(study, 0, results={10001: [99.3]})  # made with --seeds 2; this run asks 3
    _confirmed(study, 1, results={10001: [99.2]})  # below the bar 99.25 after its first seed
    rule = FreshCandidate(bar=99.25, max_params=4000, epochs=15, k=3, seeds=(10001, 10002))
    assert [t.number for t in rule.fresh(study)] == [0]
    lower = FreshCandidate(bar=99.1, max_params=4000, epochs=15, k=3, seeds=(10001, 10002))  # the bar lowered
    assert [t.number for t in lower.fresh(study)] == [0, 1]


def test_a_winner_under_the_budget_is_work_for_find_before_any_search():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study([(99.30, 3000)])
    _confirmed(study, 0, params=3000)
    records.save(study, VerifyRow(trial=0, epochs=15, k=3, target=99.4, seeds=3, results={1: [99.5]}, passed=True))
    records.save(study, Winner(0))
    assert FreshCandidate(bar=99.25, max_params=4000, epochs=15, k=3, seeds=(10001, 10002)).why(study) == \
        "trial 0 passed verify before: it is the winner"
    assert FreshCandidate(bar=99.25, max_params=3000, epochs=15, k=3, seeds=(10001, 10002)).why(study) is None


def test_the_default_bar_sits_below_the_target_and_the_flag_overrides_it(tmp_path):
    assert default_bar(99.4) == 99.25 and default_bar(99.5) == 99.35 and default_bar(0.1) == 0.0
    search = SearchConfig(study_name="s", storage=f"sqlite:///{tmp_path}/s.db", max_params=3600)
    assert FindConfig(search=search, output=tmp_path / "m.pt2").bar == 99.25
    assert FindConfig(search=search, output=tmp_path / "m.pt2", target=99.5).bar == 99.35
    assert FindConfig(search=search, output=tmp_path / "m.pt2", min_robust=0).bar == 0
    rule = FindConfig(search=search, output=tmp_path / "m.pt2").pause_rule()
    assert rule == FreshCandidate(bar=99.25, max_params=3600, epochs=search.epochs, k=search.k, seeds=(10001, 10002))
    assert FindConfig(search=search, output=tmp_path / "m.pt2", search_all=True).pause_rule() is None


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_depth_first_race_runs_only_what_one_held_candidate_needs(workers):
    """Simulated: candidates 5 (fails its second seed), 8 (holds) and 9 (never needed), two seeds
    each. Jobs are handed out as a pool of `workers` would take them, finishing in start order."""
    outcome = {(5, 1): 99.3, (5, 2): 99.1, (8, 1): 99.3, (8, 2): 99.28, (9, 1): 99.4, (9, 2): 99.4}
    race = Race(candidates=[5, 8, 9], seeds=[1, 2], bar=99.25, first={5: 99.4, 8: 99.35, 9: 99.3}, enough=1)
    running, ran = [], []
    while True:
        while len(running) < workers and (job := race.next_job(set(running))) is not None:
            running.append(job)
        if not running:
            break
        job = running.pop(0)
        ran.append(job)
        race.record(*job, outcome[job])
    assert race.stopped(5) and race.held(8) and not race.decided(9)
    # a candidate in flight holds the next one back until it is decided, however many workers are
    # free; candidate 9 never starts
    assert set(ran) == {(5, 1), (5, 2), (8, 1), (8, 2)}


def test_without_enough_the_race_runs_rounds_across_every_candidate():
    race = Race(candidates=[5, 8], seeds=[1, 2], bar=99.25, first={5: 99.4, 8: 99.35})
    assert race.next_job(set()) == (5, 1) and race.next_job({(5, 1)}) == (8, 1)


def test_a_seed_still_running_when_its_candidate_stops_is_ended_and_its_time_counted():
    import time
    from search.race import run_race
    from tests.fake_seed import fake_seed
    race = Race(candidates=[5, 8], seeds=[1, 2], bar=99.25, first={5: 99.4, 8: 99.35}, enough=1)
    done, ended = [], []
    t0 = time.time()
    # 2 workers: trial 5's seeds 1 and 2 start together (tests/fake_seed.py stands in for training); seed 1 puts it below the bar, so seed 2
    # is ended there and then, and trial 8 (the next candidate) takes both workers
    with pytest.raises(RuntimeError, match="never"):  # stop the test before trial 8's 30 s seeds end
        def on_done(trial, seed, accs, secs, device):
            done.append((trial, seed))
            race.record(trial, seed, min(accs))

        def on_cancel(trial, seed, secs):
            ended.append((trial, seed, secs))
            raise RuntimeError("never mind the rest")
        run_race(race, lambda trial, seed: ({}, {}, None), processes=2, on_done=on_done, final=False,
                 on_cancel=on_cancel, job_main=fake_seed)
    assert done == [(5, 1)] and [e[:2] for e in ended] == [(5, 2)] and 0 < ended[0][2] < 300
    assert time.time() - t0 < 300  # the 600 s seed was not waited for; the raise ended every child


def test_a_race_child_that_dies_ends_the_race_with_its_exit_code_and_every_other_child_counted():
    import time
    from search.race import run_race
    from tests.fake_seed import dying_seed
    race = Race(candidates=[5, 8], seeds=[1, 2], bar=99.25, first={5: 99.4, 8: 99.35})
    ended, t0 = [], time.time()
    with pytest.raises(RuntimeError, match=r"^trial 5 seed 1: its process ended with exit code 3$"):
        run_race(race, lambda trial, seed: ({}, {}, None), processes=2, on_done=lambda *a: None, final=False,
                 on_cancel=lambda trial, seed, secs: ended.append((trial, seed)), job_main=dying_seed)
    # rounds: trial 5 seed 1 and trial 8 seed 1 started together; the survivor was ended, its time counted
    assert ended == [(8, 1)] and time.time() - t0 < 300


@pytest.mark.slow  # starts the fork server, a process that imports torch
def test_training_processes_fork_from_a_server_that_preloaded_torch_and_keep_the_default_signals():
    """search/procs.py: the server has imported torch (and torch._dynamo, which an optimizer's
    constructor imports), so a child starts without importing it; the server blocks SIGTERM, yet
    every child starts with the signal handlers a spawned process has (SIGTERM's default; Ctrl-C's
    default, or ignored where this process was started with it ignored, as pytest-xdist's workers
    are), so terminate() ends it as it ends a spawned process, even at once after start()."""
    import multiprocessing as mp
    import signal
    from search.procs import context
    from tests.fake_seed import report_start

    def start(ctx) -> dict:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=report_start, args=(send,))
        p.start()
        send.close()
        got = recv.recv()
        p.join(timeout=60)
        assert p.exitcode == 0
        return got
    ctx = context()
    forked, spawned = start(ctx), start(mp.get_context("spawn"))
    assert forked["preloaded"] == ["search.train", "torch", "torch._dynamo"] and spawned["preloaded"] == []
    assert forked["sigterm"] == "SIG_DFL" and forked["sigint"] in ("default_int_handler", "SIG_IGN")
    assert {k: forked[k] for k in ("sigterm", "sigint", "blocked")} == {k: spawned[k] for k in ("sigterm", "sigint", "blocked")}
    assert not forked["blocked"]
    # the server (every forked child's parent) outlives a SIGTERM, as it must a signal to the group:
    # the next child is forked by the same server, not by a new one started in its place
    import os
    os.kill(forked["parent"], signal.SIGTERM)
    assert start(ctx)["parent"] == forked["parent"]
    for _ in range(5):  # SIGTERM at once after start() (the ignored-SIGTERM server lost it in 2 of 3 runs)
        sleeper = ctx.Process(target=__import__("time").sleep, args=(600,))
        sleeper.start()
        sleeper.terminate()
        sleeper.join(timeout=60)
        assert sleeper.exitcode == -signal.SIGTERM


def test_the_fork_servers_signal_mask_is_set_in_the_server_only():
    """search/_forkserver.py blocks SIGTERM in the fork server; imported anywhere else (the doctest
    runner imports every module) it must do nothing, or that process would never hear SIGTERM."""
    import importlib
    import signal
    importlib.reload(importlib.import_module("search._forkserver"))
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_start_point_still_waiting_when_the_search_pauses_is_not_counted_as_a_new_trial():
    from search.runner import _ran
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 3), n_trials=1)  # runs the first start point only
    assert [t.state.name for t in study.trials] == ["COMPLETE", "WAITING"] and _ran(study) == 1


def test_a_timeout_reached_before_a_leg_ends_the_search_for_good_and_a_rerun_reads_it_as_done(tmp_path, capsys):
    # --timeout is one deadline for the whole run, however many legs: a leg that starts after it
    # runs no trial, records the search as over, and the next `find` goes straight to its candidates
    import time
    from search.find import search_stage
    from search.runner import create_or_resume
    from storage.records import FindRecord
    search = SearchConfig(study_name="t", storage=f"sqlite:///{tmp_path}/t.db", data_dir=str(tmp_path),
                          max_params=3600, n_trials=6, enqueue=False, warm_start=False, timeout=60)
    config = FindConfig(search=search, output=tmp_path / "t.pt2")
    create_or_resume(search)
    study, more = search_stage(config, config.pause_rule(), deadline=time.time() - 1)
    assert not more and not study.trials and FindRecord.of(study).searched == 6
    assert "search: --timeout 60 s reached (0 finished trials)" in capsys.readouterr().out
    study, more = search_stage(config, config.pause_rule())
    assert not more and "search: done before" in capsys.readouterr().out
