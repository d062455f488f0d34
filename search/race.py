"""Confirm as a race: seeds run one round at a time across the candidates, and a candidate whose
seeds so far cannot reach the bar stops, its place taken by the next job of another candidate.

A candidate's seed-robust score is the minimum of its consistency scores over its seeds (its search
trial's own score included), so once any score is below the bar (--min-robust, fixed before the
race) its robust score is below it whatever the remaining seeds do: stopping it is exact, not a
guess, and it would never have met the test set. Without a bar nothing stops early (every
candidate runs every seed, as before).

With `enough` set (find's default, which confirms only until it has something to verify), the race
is depth first: the best candidate's seeds first, the next candidate's only once an earlier one has
stopped, and no job is handed out once `enough` candidates have run every seed at or above the bar
(nor while candidates still in flight could make up that number). Candidates it never reached are
left undecided for a later round.

>>> r = Race(candidates=[7, 3], seeds=[10001, 10002], bar=99.2, first={7: 99.3, 3: 99.25})
>>> r.next_job(running=set())
(7, 10001)
>>> r.record(7, 10001, 99.1)  # below the bar: trial 7 cannot reach it any more
>>> r.stopped(7), r.next_job(running={(3, 10001)})
(True, (3, 10002))
>>> d = Race(candidates=[7, 3], seeds=[10001, 10002], bar=99.2, first={7: 99.3, 3: 99.25}, enough=1)
>>> d.next_job(running=set()), d.next_job(running={(7, 10001)})
((7, 10001), (7, 10002))
>>> d.record(7, 10001, 99.3); d.next_job(running={(7, 10002)}) is None  # trial 7 may still hold
True
>>> d.record(7, 10002, 99.25); d.held(7), d.next_job(running=set()), d.decided(3)
(True, None, False)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Race:
    candidates: list[int]  # trial numbers, best first
    seeds: list[int]  # the confirm seeds, in the order they run
    bar: float | None  # --min-robust; None: no early stop
    first: dict[int, float]  # each candidate's search score (its own seed)
    scores: dict[int, dict[int, float]] = field(default_factory=dict)  # trial -> seed -> consistency score
    enough: int | None = None  # depth first, until this many candidates held the bar on every seed

    def __post_init__(self):
        for t in self.candidates:
            self.scores.setdefault(t, {})

    def record(self, trial: int, seed: int, score: float) -> None:
        self.scores[trial][seed] = score

    def robust_so_far(self, trial: int) -> float:
        return min([self.first[trial], *self.scores[trial].values()])

    def stopped(self, trial: int) -> bool:
        """Its seeds so far put its robust score below the bar: no further seed can lift it."""
        return self.bar is not None and self.robust_so_far(trial) < self.bar

    def why_stopped(self, trial: int) -> str:
        n = len(self.scores[trial])
        return (f"robust {self.robust_so_far(trial):.2f} after {n} confirm seed(s) is below the bar {self.bar:.2f}" if n
                else f"its search score {self.first[trial]:.2f} is below the bar {self.bar:.2f}")

    def held(self, trial: int) -> bool:
        """Every seed run, none below the bar: it goes on to verify."""
        return not self.stopped(trial) and all(s in self.scores[trial] for s in self.seeds)

    def decided(self, trial: int) -> bool:
        return self.stopped(trial) or self.held(trial)

    def next_job(self, running: set) -> tuple[int, int] | None:
        """The next (trial, seed): rounds of one seed across the candidates still in the race, or,
        with `enough`, the best undecided candidate's next seed while more are needed."""
        if self.enough is not None:
            may_hold = sum(map(self.held, self.candidates))  # held, or undecided with every seed started
            for t in self.candidates:
                if may_hold >= self.enough:
                    return None
                if self.decided(t):
                    continue
                todo = [seed for seed in self.seeds if seed not in self.scores[t] and (t, seed) not in running]
                if todo:
                    return t, todo[0]
                may_hold += 1
            return None
        for seed in self.seeds:
            for t in self.candidates:
                if not self.stopped(t) and seed not in self.scores[t] and (t, seed) not in running:
                    return t, seed
        return None

    def skipped(self, trial: int) -> list[int]:
        """The seeds a stopped candidate did not run (the compute the race saved)."""
        return [s for s in self.seeds if s not in self.scores[trial]] if self.stopped(trial) else []


def _job_main(job, conn) -> None:
    """A race job's process: train one seed, send back run_seed's result (or the error's line)."""
    from search.retrain import ignore_sigint, run_seed
    ignore_sigint()  # the parent hears Ctrl-C and ends its children
    try:
        conn.send(("ok", run_seed(job)))
    except BaseException as e:  # noqa: BLE001 - reported by the parent, which raises
        conn.send(("error", f"{type(e).__name__}: {e}"))


def run_race(race: Race, job_of, *, processes: int, on_done, final: bool, data_dir=None,
             train_limit: int | None = None, on_cancel=None, job_main=_job_main) -> None:
    """Run the race's jobs, each in its own one-thread process, at most `processes` at a time,
    dispatching the next job (race.next_job) whenever one ends, so a stopped candidate's seeds are
    never started and the freed worker takes another candidate's. A seed still running when its
    candidate stops is ended at once (it can no longer change the verdict), as is every seed still
    running when a stop or an error ends the race: on_cancel(trial, seed, seconds since its process
    started, interpreter and data loading included) lets the caller count its cost. job_of(trial, seed) -> (spec, config, weights
    path or None), as the retraining pool's jobs take them; on_done(trial, seed, accs, seconds,
    device) runs here as each ends (it records the score into the race). A stop asked for
    (search.stopping) ends the wait, and every child with it. job_main(job, conn): what each
    process runs (tests stand a quick fake in for training)."""
    import time

    from search import stopping
    from search.procs import context
    from search.retrain import seed_job
    ctx = context()
    running: dict[tuple[int, int], tuple] = {}  # (trial, seed) -> (process, its result pipe, start time)
    try:
        while True:
            while len(running) < max(1, processes):
                job = race.next_job(set(running))
                if job is None:
                    break
                spec, config, path = job_of(*job)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=job_main, daemon=True, args=(seed_job(
                    job[0], spec, config, job[1], path, final=final, data_dir=data_dir, train_limit=train_limit), send))
                proc.start()
                send.close()  # the child holds the only writer: its death reads as EOF here
                running[job] = (proc, recv, time.time())
            if not running:
                return
            stopping.check()
            ended = [j for j, (_, recv, _) in running.items() if recv.poll()]
            if not ended:
                time.sleep(0.2)
                continue
            results = []
            for j in ended:  # every result read before any callback runs, so none is lost if one raises
                proc, recv, _ = running.pop(j)
                try:
                    status, value = recv.recv()
                except EOFError:
                    status, value = "error", None
                proc.join()
                if status != "ok":
                    stopping.check()  # a signal to the whole process group killed it: a stop, not a crash
                    raise RuntimeError(f"trial {j[0]} seed {j[1]}: "
                                       + (value or f"its process ended with exit code {proc.exitcode}"))
                results.append(value)
            for value in results:
                on_done(*value)
            for j in [j for j in running if race.stopped(j[0])]:
                proc, _, t0 = running.pop(j)
                proc.terminate()
                proc.join()
                if on_cancel:
                    on_cancel(*j, time.time() - t0)
    finally:  # a stop or an error: every child ends here, and what it ran is counted
        for (trial, seed), (proc, _, t0) in running.items():
            proc.terminate()
            proc.join()
            if on_cancel:
                try:
                    on_cancel(trial, seed, time.time() - t0)
                except Exception:  # noqa: BLE001 - the stop or error under way is what the caller must see
                    pass
