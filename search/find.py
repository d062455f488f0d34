"""`find`: from a budget to a verified model file, in three stages on one study.

1. search   the study service under the budget (pruning on). By default it pauses as soon as a
            trial scores at least the bar (--min-robust, default target - 0.15, space.target) and
            has not been confirmed: find goes on to confirm and verify it, and searches on only if
            it does not hold (each pass a "leg"), until --n-trials. --search-all runs the whole
            --n-trials first, then confirms the top --top (the behaviour before legs).
2. confirm  candidates are retrained on the same 50,000 / 10,000 split with further seeds; a
            trial's seed-robust score is the minimum of its consistency scores over all its seeds.
            A race (search/race.py): a candidate stops once a seed puts it below the bar; by
            default depth first, until one candidate held the bar on every seed. The candidate
            order is the robust score (ties: fewer parameters). Only validation data is used up to here.
3. verify   candidates at or above the bar, best first, are retrained on all 60,000 with --seeds
            seeds, the test set scored every epoch; the first the hold rule passes wins. How many
            candidates met the test set is recorded and reported.
The winner (its seed-1 model, trained on all 60,000) is exported as .pt2 and .onnx with its verify
table in the metadata.

Every result is stored in the study as it is made, so an interrupted `find` resumes where it
stopped. They are study user attributes (storage.records: ConfirmRow, VerifyRow, PartialRow, ...)
because Optuna refuses to update a trial once it has finished.
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.config import SearchConfig
from search.config import check_counts
from search.data import training_counts
from search.race import Race, run_race
from search.retrain import retrain_seeds
from search.verify import print_table, until_decided
from space.hold import HOLD_LEVEL, MAX_SEEDS, check_hold_settings
from space.recipe import ConfigError, TrainConfig
from space.target import TARGET_ACC, default_bar
from storage import notes, records
from storage.records import (Candidates, ConfirmRow, StudySettings, FindRecord, HoldEstimate, PartialRow, RaceStop,
                             RejudgeEvent, Rejudged, Rejudgement, Searched, TestsUsed, TrialRecord, VerifyRow, Winner,
                             seeds_met)
from storage.provenance import describe_training, training_record
from storage.artifacts import verified_weights_path
from storage.db import StudyError, storage_url
from storage.ranking import ranked_trials

CONFIRM_SEED_BASE = 10_000  # further seeds of the confirm stage: never a trial's own seed (its number)


def confirm_seeds(seeds: int) -> list[int]:
    """The further seeds confirm runs for --seeds N (the search run is the first)."""
    return [CONFIRM_SEED_BASE + i for i in range(1, seeds)]


@dataclass(frozen=True, kw_only=True)
class FindConfig:
    search: SearchConfig
    output: Path
    target: float = TARGET_ACC
    seeds: int = 3
    top: int = 3
    # Verify only candidates whose seed-robust validation score reaches this bar; None: the default,
    # target - 0.15 (space.target.default_bar says why). 0 verifies every candidate.
    min_robust: float | None = None
    # Search the whole --n-trials before confirming (else: pause the search for each fresh
    # candidate at or above the bar, confirm and verify it, search on only if it does not hold).
    search_all: bool = False
    hold_level: float = HOLD_LEVEL  # PASS needs P(a new seed holds) >= this (space.hold)
    max_seeds: int = MAX_SEEDS  # verify seeds at most per candidate while the rule is undecided
    rejudge: bool = False  # judge stored test runs again at another target / K / level (a recorded use)

    def __post_init__(self):
        check_counts(seeds=self.seeds, top=self.top, max_seeds=self.max_seeds)
        try:
            check_hold_settings(level=self.hold_level, min_seeds=self.seeds, max_seeds=self.max_seeds)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for flag, v in (("--target", self.target), ("--min-robust", self.min_robust)):
            if v is not None and (isinstance(v, bool) or not 0 <= v <= 100):  # NaN fails the range too
                raise ConfigError(f"{flag} must be a percentage in [0, 100], got {v!r}")
        out = Path(self.output)
        if out.suffix != ".pt2" or out.is_dir():
            raise ConfigError(f"-o must name a .pt2 file, got {out}")
        from storage.outputs import check_output
        check_output(out, what="-o")  # the suffix is checked above; a folder that cannot be written: now, not after hours

    @property
    def bar(self) -> float:
        """The confirm bar: --min-robust, else the default below the target."""
        return self.min_robust if self.min_robust is not None else default_bar(self.target)

    def pause_rule(self) -> "FreshCandidate | None":
        """When the search pauses for confirm and verify (None with --search-all)."""
        s = self.search
        return None if self.search_all else FreshCandidate(bar=self.bar, max_params=s.max_params, epochs=s.epochs,
                                                           k=s.k, seeds=tuple(confirm_seeds(self.seeds)))


@dataclass(frozen=True, kw_only=True)
class FreshCandidate:
    """When the search pauses: while the study holds work for confirm, verify or export under this
    run's rule, the search does not run. (Picklable: the search's worker processes check it before
    each trial; tests/test_legs.py.) The work, in the order find does it:
    - a winner under the budget: it is exported (again);
    - a complete trial under the budget, at or above the bar, whose confirm is not done: no confirm
      row made with these epochs and K, or one missing some of these seeds and not below the bar
      (the bar lowered, or --seeds raised, since it was made);
    - a confirmed trial under the budget, robust at or above the bar, whose verify has no row yet
      (not started, or stopped midway)."""
    bar: float
    max_params: int
    epochs: int
    k: int
    seeds: tuple[int, ...]  # the confirm seeds a candidate runs (CONFIRM_SEED_BASE + 1, ...)

    def confirm_row(self, confirmed: dict[int, ConfirmRow], trial: int) -> ConfirmRow | None:
        """The trial's confirm row (confirmed: FindRecord.confirmed(), read once by the caller) if it
        was made with these epochs and K (else None)."""
        row = confirmed.get(trial)
        return row if row is not None and row.epochs == self.epochs and row.k == self.k else None

    def fresh(self, study: optuna.Study) -> list:
        """The trials whose confirm is not done, best first (storage.ranking's order)."""
        return self._fresh(FindRecord.of(study), ranked_trials(study))

    def unverified(self, study: optuna.Study) -> list[int]:
        """Confirmed trials at or above the bar whose verify has no row yet."""
        return self._unverified(FindRecord.of(study), ranked_trials(study))

    # why() runs before every search trial of every worker: it reads the study's records and trials
    # once and hands them to both rules (fresh() and unverified() each read them again).
    def _fresh(self, found: FindRecord, ranked: list) -> list:
        confirmed = found.confirmed()
        out = []
        for t in ranked:
            if t.values[0] < self.bar or TrialRecord.of(t).params >= self.max_params:
                continue
            row = self.confirm_row(confirmed, t.number)
            if row is None or (row.robust >= self.bar and any(s not in row.results for s in self.seeds)):
                out.append(t)
        return out

    def _unverified(self, found: FindRecord, ranked: list) -> list[int]:
        confirmed = found.confirmed()
        out = []
        for t in ranked:
            row = self.confirm_row(confirmed, t.number)
            if (row is not None and row.params < self.max_params and row.robust >= self.bar
                    and all(s in row.results for s in self.seeds) and found.verify(t.number) is None):
                out.append(t.number)
        return out

    def why(self, study: optuna.Study) -> str | None:
        found = FindRecord.of(study)
        winner = found.winner
        won = found.confirmed().get(winner) if winner is not None else None
        if won is not None and won.params < self.max_params:
            return f"trial {winner} passed verify before: it is the winner"
        ranked = ranked_trials(study)
        fresh = self._fresh(found, ranked)
        if fresh:
            t = fresh[0]
            return (f"trial {t.number} scores {t.values[0]:.2f}, at or above the bar {self.bar:.2f}, and its confirm "
                    f"is not done: confirm and verify it before searching on")
        waiting = self._unverified(found, ranked)
        if waiting:
            return f"trial {waiting[0]} is confirmed at or above the bar and its verify is not finished: verify it first"
        return None


def _stage(name: str) -> None:
    from search import stopping
    stopping.check()  # a stop asked for while the last stage wrote its results ends here
    print(f"\n== find: {name} ==", flush=True)


def search_stage(config: FindConfig, until: FreshCandidate | None = None,
                 deadline: float | None = None) -> tuple[optuna.Study, bool]:
    """(study, more): more is True when the search paused for a fresh candidate (until) and has
    trials of its --n-trials left to run; False when it is over (reached, or --timeout: `deadline`,
    one for the whole run, however many legs it takes)."""
    from search.runner import create_or_resume, finished_count, load_checked, run_search
    # A finished search is read, not resumed: resuming writes the run's settings into the study, and
    # a `find --max-params 4000` asked of a study searched under 5,000 must not rewrite its budget
    # (there --max-params only filters the candidates; any other protocol difference is refused).
    study = load_checked(config.search, budget_may_differ=True) or create_or_resume(config.search)
    finished = finished_count(study)
    searched_to = FindRecord.of(study).searched or 0
    if finished >= config.search.n_trials or searched_to >= config.search.n_trials:
        searched = dataclasses.replace(config.search, max_params=StudySettings.of(study).get("max_params",
                                                                                  config.search.max_params))
        print(f"search: done before ({finished} finished trials; --n-trials {config.search.n_trials})\n"
              + searched.header().split("\n")[0], flush=True)
        return study, False
    # the search is not finished: a leg may resume it, so a study searched under another budget is
    # refused now, before any stage writes or meets the test set (not when a later leg resumes it)
    load_checked(config.search)
    why = until.why(study) if until is not None else None
    if why:
        print(f"search: paused ({finished} finished trials of --n-trials {config.search.n_trials}): {why}", flush=True)
        return study, True
    run = config.search
    if deadline is not None:
        left = deadline - time.time()
        if left <= 0:
            print(f"search: --timeout {run.timeout:g} s reached ({finished} finished trials)", flush=True)
            records.save(study, Searched(config.search.n_trials))
            return study, False
        run = dataclasses.replace(run, timeout=left)  # what is left of this run's --timeout
    study = run_search(run, until=until)  # resumes (or creates) the study, writing this run's settings
    if until is not None and until.why(study) and finished_count(study) < config.search.n_trials:
        return study, True
    records.save(study, Searched(config.search.n_trials))  # reached, or stopped by --timeout
    return study, False


def _save_partial(study: optuna.Study, stage: str, trial: int, same: dict, results: dict, spent: dict,
                  devices: dict, met: set[int] | None = None) -> None:
    """Store what a stage has done for one trial so far as its PartialRow: the seeds finished, their
    training seconds and where they trained; verify: with `met`, every seed started."""
    records.save(study, PartialRow(stage=stage, trial=trial, **same, results=dict(results),
                                   core_seconds=sum(spent.values()), devices=dict(devices),
                                   met=sorted(met) if met is not None else None))


def _keep_seed(study: optuna.Study, stage: str, trial: int, same: dict, results: dict, spent: dict,
               devices: dict, met: set[int] | None = None):
    """on_seed for retrain_seeds: store each seed as it finishes (_save_partial), so a stage stopped
    mid-candidate resumes with only the missing seeds."""
    def keep(seed: int, accs: list[float], secs: float, device: str) -> None:
        results[seed] = accs
        spent[seed] = secs
        devices[seed] = device
        _save_partial(study, stage, trial, same, results, spent, devices, met)
    return keep


def _resumed(stored, same: bool, keep=lambda seed: True) -> tuple[dict, dict, dict]:
    """(results, spent, devices) an interrupted stage left for one trial in `stored` (its row, full
    or partial, or None): its finished seeds (those `keep` accepts), their training seconds so far
    and where each trained."""
    results = {seed: accs for seed, accs in stored.results.items() if keep(seed)} if same and stored else {}
    spent = {"before": stored.core_seconds or 0.0} if results else {}  # training seconds, all seeds
    devices = {seed: d for seed, d in (stored.devices or {}).items() if seed in results} if stored else {}
    return results, spent, devices


def confirm_stage(config: FindConfig, study: optuna.Study, until: FreshCandidate | None = None) -> list[ConfirmRow]:
    """Seed-robust scores of the candidates decided, best first. With --search-all (until None): the
    top --top trials, all raced to a decision. Else: the trials confirmed before, and the best
    --top fresh candidates (until.fresh), raced depth first until one held the bar on every seed
    (those the race did not reach get no row: they wait for the next leg)."""
    s = config.search
    # The budget is this run's --max-params, not the one the study was searched under: a study
    # searched under 5,000 can be asked for its best under 4,000, and never hands back a model
    # over the budget it was asked for.
    complete = ranked_trials(study)
    trial_records = {t.number: TrialRecord.of(t) for t in complete}
    params = {n: r.params for n, r in trial_records.items()}
    under = [t for t in complete if params[t.number] < s.max_params]
    if until is None:
        ranked, fresh = under[:config.top], set()
    else:
        fresh = {t.number for t in until.fresh(study)[:config.top]}
        confirmed = FindRecord.of(study).confirmed()
        ranked = [t for t in under if t.number in fresh or until.confirm_row(confirmed, t.number) is not None]
    if not ranked and under:  # legs: none at or above the bar, none confirmed before
        print(f"confirm: no trial scores at least the bar {config.bar:.2f} (the best: {under[0].values[0]:.2f}); "
              f"nothing to confirm", flush=True)
        return []
    if not ranked:
        raise StudyError(f"study {study.study_name!r} has no complete trial under --max-params "
                         f"{s.max_params:,} to confirm ({len(complete)} complete trial(s), "
                         f"the smallest with {min(params.values(), default=0):,} params)"
                         if complete else f"study {study.study_name!r} has no complete trial to confirm")
    over = sum(params[t.number] >= s.max_params for t in complete)
    if over:
        print(f"confirm: only trials under --max-params {s.max_params:,} are candidates "
              f"({over} complete trial(s) at or over it)")
    further = confirm_seeds(config.seeds)
    kept, finished, made, configs = {}, {}, {}, {}
    race = Race(candidates=[t.number for t in ranked if until is None or t.number in fresh], seeds=further,
                bar=config.bar, first={}, enough=None if until is None else 1)
    images, available = training_counts(s.data_dir, final=False, train_limit=s.train_limit)  # what they train on
    found = FindRecord.of(study)
    for t in ranked:
        # finished seeds: the stage's row, or the seeds an interrupted run stored one by one; only a
        # record made with this run's epochs and K counts (an old row must not hide a newer partial)
        earlier = (found.runs("confirm", t.number), found.runs("confirm", t.number, partial=True))
        stored = next((r for r in earlier if r is not None and r.epochs == s.epochs and r.k == s.k), None)
        results, spent, devices = _resumed(stored, stored is not None)
        kept[t.number] = (results, spent, devices, _keep_seed(
            study, "confirm", t.number, {"epochs": s.epochs, "k": s.k}, results, spent, devices))
        missing = [seed for seed in further if seed not in results]
        # a trial not retrained now keeps the time its row was made (none for rows older than that)
        finished[t.number] = stored.finished if stored else None
        made[t.number] = stored.provenance if stored else None  # likewise what made it (none: rows older than records)
        race.first[t.number] = t.values[0]
        race.scores[t.number] = {seed: min(accs[-s.k:]) for seed, accs in results.items() if seed in further}
        runs_now = until is None or t.number in fresh  # in legs only the fresh candidates race
        if missing and race.stopped(t.number) and until is None:  # its own score (or a seed before) is below the bar
            print(f"confirm: trial {t.number} ({params[t.number]:,} params) not retrained: "
                  f"{race.why_stopped(t.number)}", flush=True)
        elif missing and runs_now:
            stops = f"; stops once a seed puts its robust score below the bar {config.bar:.2f}"
            print(f"confirm: trial {t.number} ({params[t.number]:,} params, score {t.values[0]:.2f}): "
                  f"retraining with seeds {', '.join(map(str, missing))} on "
                  + describe_training(final=False, train_limit=s.train_limit, epochs=s.epochs, images=images,
                                      available=available) + stops, flush=True)
            configs[t.number] = (trial_records[t.number].spec, TrainConfig.from_dict(
                {**trial_records[t.number].config, "epochs": s.epochs}).to_dict())
    retrained = set()

    def done(trial: int, seed: int, accs: list[float], secs: float, device: str) -> None:
        was_in = not race.stopped(trial)
        kept[trial][3](seed, accs, secs, device)
        race.record(trial, seed, min(accs[-s.k:]))
        retrained.add(trial)
        if was_in and race.stopped(trial):
            skipped = race.skipped(trial)
            print(f"confirm: trial {trial} stopped: {race.why_stopped(trial)}"
                  + (f" (seeds {', '.join(map(str, skipped))} not run to their end)" if skipped else ""), flush=True)

    def cancelled(trial: int, seed: int, secs: float) -> None:
        results, spent, devices, _ = kept[trial]
        spent[f"ended {seed}"] = secs  # its cost counts (one thread: wall seconds are core-seconds)
        _save_partial(study, "confirm", trial, {"epochs": s.epochs, "k": s.k}, results, spent, devices)
        print(f"confirm: trial {trial} seed {seed} ended after {secs:.0f}s, its time counted"
              + (": its candidate is out of the race" if race.stopped(trial) else ""), flush=True)

    # the race (search/race.py): a candidate whose seeds so far put it below the bar stops (its
    # seeds still running end at once), and a freed worker takes the next job
    run_race(race, lambda trial, seed: (*configs[trial], None), processes=s.workers, on_done=done, final=False,
             data_dir=s.data_dir, train_limit=s.train_limit, on_cancel=cancelled)
    rows = []
    for t in ranked:
        if t.number in fresh and not race.decided(t.number):
            print(f"confirm: trial {t.number} not reached (a candidate before it held the bar); it waits for "
                  f"the next leg", flush=True)
            continue
        results, spent, devices, _ = kept[t.number]
        ran = [seed for seed in further if seed in results]  # all of them, unless the race stopped it
        scores = [t.values[0]] + [min(results[seed][-s.k:]) for seed in ran]
        ran_on = {seed: d for seed, d in devices.items() if seed in ran}
        stopped = (RaceStop(why=race.why_stopped(t.number), bar=race.bar, seeds_not_run=race.skipped(t.number))
                   if race.stopped(t.number) and race.skipped(t.number) else None)
        run = (training_record(final=False, train_limit=s.train_limit, epochs=s.epochs, seeds=ran, devices=ran_on,
                               images=images, available=available)
               if t.number in retrained else made[t.number])
        row = ConfirmRow(trial=t.number, params=params[t.number], epochs=s.epochs, k=s.k,
                         results={seed: results[seed] for seed in ran}, scores=scores, robust=min(scores),
                         core_seconds=sum(spent.values()), devices=ran_on, stopped=stopped,
                         finished=(_now() if t.number in retrained else finished[t.number]) or None,
                         provenance=run)
        records.save(study, row)
        notes.add_section(study, t.number, "## Confirmation (find, validation)", notes.verify_markdown(
            {"search": [t.values[0]], **{seed: results[seed][-s.k:] for seed in ran}}, 1, None,
            title=f"Retrained with further seeds on "
                  + (run.text if run else describe_training(final=False, train_limit=s.train_limit, epochs=s.epochs,
                                                           images=images, available=available))
                  + f"; consistency score (min of the last {s.k}) per seed; seed-robust score **{row.robust:.2f}**.",
            passed=None))
        rows.append(row)
    rows.sort(key=lambda r: (-r.robust, r.params, r.trial))
    print(f"{'trial':>5} {'params':>7}  {'consistency per seed':<28} {'robust':>7}")
    for r in rows:
        print(f"{r.trial:>5} {r.params:>7,}  {' '.join(f'{x:.2f}' for x in r.scores):<28} {r.robust:>7.2f}"
              + ("  stopped by the race (below --min-robust)" if r.stopped is not None else ""))
    records.save(study, Candidates(tuple(r.trial for r in rows)))
    return rows


def _now() -> str:
    """When a stage's record was made (UTC, to the second): trials carry Optuna's own start and end
    times, confirm and verify rows carry this, so a study's history can be read off it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _weights_path(config: FindConfig, trial: int, seed: int) -> Path:
    url = storage_url(study_name=config.search.study_name, storage=config.search.storage)
    return verified_weights_path(url, config.search.study_name, trial, seed)


def verify_stage(config: FindConfig, study: optuna.Study, candidates: list[ConfirmRow]) -> VerifyRow | None:
    """The first candidate the hold rule (space.hold) passes, or None. A candidate's seeds run until
    the rule decides: --seeds first, then one at a time while undecided, up to --max-seeds; every
    seed is a test-set use. A row stored at another target or K is not judged again unless
    --rejudge says so (a recorded test-set use): the target is fixed before the test set is met."""
    s = config.search
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    found = FindRecord.of(study)
    met = list(found.tests_used)
    images, available = training_counts(s.data_dir, final=True, train_limit=s.train_limit)  # what they train on
    for row in candidates:
        t = trials[row.trial]
        rec = TrialRecord.of(t)
        stored = found.verify(t.number)
        if stored is None and row.robust < config.bar:
            print(f"verify: trial {t.number} not verified: robust {row.robust:.2f} is below --min-robust "
                  f"{config.bar:.2f} (the test set is not used)", flush=True)
            continue
        if stored is not None and stored.epochs != s.epochs:
            stored = None  # another protocol's runs: this one's are made afresh
        moved = _moved(config, stored)
        if moved and not config.rejudge:
            raise _moved_error(t.number, moved)
        if moved:
            stored = _rejudged(study, stored, moved)
        results, spent, devices = _verify_runs(config, study, t.number, stored)
        started = _verify_met(config, study, t.number, stored)  # every seed that met the test set
        settings = {"epochs": s.epochs, "k": s.k, "target": config.target, "seeds": config.seeds}
        cfg = TrainConfig.from_dict({**rec.config, "epochs": s.epochs}).to_dict()
        keep = _keep_seed(study, "verify", t.number, settings, results, spent, devices, met=started)
        trained: list[int] = []

        def run(todo: list[int], t=t, rec=rec, row=row, cfg=cfg, keep=keep, started=started,
                settings=settings) -> None:
            if t.number not in met:
                met.append(t.number)
                records.save(study, TestsUsed(tuple(met)))  # counted before the test set is scored
            started.update(todo)  # each seed is a test-set use from its first epoch: counted before it starts
            _save_partial(study, "verify", t.number, settings, results, spent, devices, started)
            print(f"verify: trial {t.number} ({rec.params:,} params, robust {row.robust:.2f}): "
                  f"seed{'s' if len(todo) > 1 else ''} {', '.join(map(str, todo))} on "
                  f"{describe_training(final=True, train_limit=s.train_limit, epochs=s.epochs, images=images, available=available)}"
                  f", test set every "
                  f"epoch" + "".join(f" (seed{'s' if len(done) > 1 else ''} {', '.join(map(str, done))} {when})"
                                     for done, when in ((sorted(set(results) - set(trained)), "done in an earlier run"),
                                                        (sorted(set(results) & set(trained)), "done above"))
                                     if done),
                  flush=True)
            trained.extend(todo)
            retrain_seeds(rec.spec, cfg, todo, final=True, data_dir=s.data_dir, train_limit=s.train_limit,
                          processes=s.workers, weights_path=lambda seed, n=t.number: str(_weights_path(config, n, seed)),
                          on_seed=keep)

        decision = until_decided(results, run, k=s.k, target=config.target, level=config.hold_level,
                                 min_seeds=config.seeds, max_seeds=config.max_seeds, at_once=s.workers)
        hold = HoldEstimate.of(decision)
        if trained or moved or stored is None or stored.hold != hold:
            fresh = dict(trial=t.number, epochs=s.epochs, k=s.k, target=config.target, seeds=config.seeds,
                         max_seeds=config.max_seeds, results=dict(sorted(results.items())),
                         passed=decision.verdict == "PASS", hold=hold,
                         trained_on=describe_training(final=True, train_limit=s.train_limit, epochs=s.epochs,
                                                      seeds=sorted(results), images=images, available=available),
                         core_seconds=sum(spent.values()), devices=dict(devices),
                         stopped=sorted(started - set(results)) or None)
            stored = stored.replace(**fresh) if stored is not None else VerifyRow(**fresh)  # other fields kept
            if trained or stored.finished is None:
                stored = stored.replace(finished=_now())
            if trained:  # the facts and the versions that made these runs (storage.provenance)
                stored = stored.replace(provenance=training_record(
                    final=True, train_limit=s.train_limit, epochs=s.epochs, seeds=sorted(results), devices=devices,
                    images=images, available=available))
            records.save(study, stored)
            notes.add_section(study, t.number, notes.VERIFY_HEADING, notes.verify_markdown(
                stored.results, s.k, config.target, passed=stored.passed, hold=hold,
                title=f"`find` retrained it on {stored.trained_on}, the official test set scored every epoch."))
        else:
            print(f"verify: trial {t.number} verified before")
        print_table(stored.results, s.k, config.target)
        print(f"trial {t.number}: {stored.describe_hold()}", flush=True)
        if stored.passed:
            records.save(study, Winner(t.number))
            return stored
    return None


_FLAG = {"target": "--target", "k": "--last-k", "level": "--hold-level"}


def _moved(config: FindConfig, stored: VerifyRow | None) -> dict:
    """{setting: (stored, asked)} where this run would judge a stored verify row by another rule."""
    if stored is None or stored.epochs != config.search.epochs:
        return {}
    asked = {"target": config.target, "k": config.search.k}
    have = {"target": stored.target, "k": stored.k}
    if stored.hold is not None:
        asked["level"], have["level"] = config.hold_level, stored.hold.level
    return {f: (have[f], asked[f]) for f in asked if have[f] != asked[f]}


def _moved_error(trial: int, moved: dict) -> StudyError:
    was = ", ".join(f"{_FLAG[f]} {a}" for f, (a, _) in moved.items())
    now = ", ".join(f"{_FLAG[f]} {b}" for f, (_, b) in moved.items())
    return StudyError(f"trial {trial} met the test set judged at {was}; judging its test runs again at {now} "
                      f"moves the target after the test set was seen; rerun with the original settings, or add "
                      f"--rejudge to judge them again as a recorded test-set use")


def check_target_fixed(config: FindConfig) -> None:
    """Before any stage writes: refuse a run that would judge stored test runs by another rule
    (unless --rejudge), so a refused run changes nothing stored."""
    if config.rejudge:
        return
    from storage.db import load_study
    try:
        study = load_study(study_name=config.search.study_name, storage=config.search.storage)
    except StudyError:
        return  # no study yet: nothing has met the test set
    for row in FindRecord.of(study).verified().values():
        moved = _moved(config, row)
        if moved:
            raise _moved_error(row.trial, moved)


def _rejudged(study: optuna.Study, stored: VerifyRow, moved: dict) -> VerifyRow:
    """The row, its verdict history extended: judged again at this run's target / K / level (asked
    with --rejudge). Each re-judgement is recorded as a test-set use of the study."""
    event = RejudgeEvent(trial=stored.trial, from_={f: a for f, (a, _) in moved.items()},
                         to={f: b for f, (_, b) in moved.items()}, verdict_before=stored.verdict, at=_now())
    records.save(study, Rejudged(FindRecord.of(study).rejudged + (event,)))
    print(f"verify: trial {stored.trial}: its test runs judged again at "
          f"{', '.join(f'{_FLAG[f]} {b}' for f, (_, b) in moved.items())} (--rejudge; recorded as a test-set use)")
    history = list(stored.rejudged or []) + [Rejudgement(target=stored.target, k=stored.k, verdict=stored.verdict,
                                                         at=event.at)]
    order = stored.order + ("rejudged",) if stored.order and "rejudged" not in stored.order else stored.order
    return stored.replace(rejudged=history, order=order)  # appended to the stored row, as it always was


def _verify_runs(config: FindConfig, study: optuna.Study, trial: int, stored: VerifyRow | None):
    """(results, spent, devices) already on the test set for this trial under this run's epochs:
    the stored row's seeds, else those an interrupted run left (whose weights are on disk)."""
    if stored is not None:
        return _resumed(stored, True)
    partial = FindRecord.of(study).partial("verify", trial)
    return _resumed(partial, partial is not None and partial.epochs == config.search.epochs,
                    keep=lambda seed: _weights_path(config, trial, seed).is_file())


def _verify_met(config: FindConfig, study: optuna.Study, trial: int, stored: VerifyRow | None) -> set[int]:
    """The seeds of this trial that met the test set under this run's epochs before this run: the
    stored row's (results and seeds stopped midway), else an interrupted run's (every seed started)."""
    if stored is not None:
        return seeds_met(stored)
    partial = FindRecord.of(study).partial("verify", trial)
    return seeds_met(partial) if partial is not None and partial.epochs == config.search.epochs else set()


def export_winner(config: FindConfig, study: optuna.Study, verified: VerifyRow) -> Path:
    from storage.modelfile import export_verified
    export_verified(study_name=study.study_name, storage=config.search.storage, trial=str(verified.trial),
                    output=config.output, study=study)
    return Path(config.output)


def print_cost(study: optuna.Study) -> None:
    """The study's cost so far by stage, as `report` computes it from what was recorded (every
    trial's epochs, pruned ones and those a race stopped included)."""
    from storage.report import study_cost
    c = study_cost(study)
    print(f"cost so far: search {c['search_core_hours']:.2f} core-hours ({c['trials']} trials, "
          f"{100 * c['pruned_share']:.0f} % on pruned ones), confirm {c['confirm']['core_hours']:.2f}, "
          f"verify {c['verify']['core_hours']:.2f}; {c['total_core_hours']:.2f} in all", flush=True)


def find(config: FindConfig) -> int:
    """0 when a model passed verify and was exported, 1 when no candidate passed."""
    from search.data import ensure_files
    from search.runner import install_stop_signals, quiet_optuna
    install_stop_signals()
    quiet_optuna()
    ensure_files(config.search.data_dir)
    check_target_fixed(config)
    until = config.pause_rule()
    # --timeout bounds the whole run's searching, however many legs it takes
    deadline = time.time() + config.search.timeout if config.search.timeout else None
    leg, judged = 1, set()  # candidates verify judged in an earlier leg of this run (not shown again)
    while True:
        again = f" (leg {leg})" if leg > 1 else ""
        _stage(f"1/3 search under {config.search.max_params:,} parameters{again}"
               + ("" if until is None else f", until a trial scores at least the bar {config.bar:.2f}"))
        study, more = search_stage(config, until, deadline)
        print_cost(study)
        _stage((f"2/3 confirm the top {config.top}" if until is None else "2/3 confirm the best fresh candidate")
               + f" on validation with {config.seeds} seeds each{again}")
        candidates = confirm_stage(config, study, until)
        print_cost(study)
        _stage(f"3/3 verify on the test set: >= {config.target} in each of the last {config.search.k} epochs, "
               f"{config.seeds} seeds, more while undecided (up to {config.max_seeds}), PASS when P(a new seed holds) "
               f">= {config.hold_level:.0%}{again}")
        verified = verify_stage(config, study, [r for r in candidates if r.trial not in judged])
        judged |= {r.trial for r in candidates}
        print_cost(study)
        if verified is not None or until is None:
            break
        met = len(FindRecord.of(study).tests_used)
        if met >= config.top:  # in legs --top caps the candidates that may meet the test set
            print(f"\n{met} of find's candidates met the test set, --top {config.top}: no more meet it in this study "
                  f"(raise --top to let more)", flush=True)
            break
        pending = until.why(study)
        if not (more or pending):
            break
        leg += 1
        print(f"\nno candidate held yet: {'confirming the next candidate' if pending else 'searching on'}", flush=True)
    notes.refresh_study_note(study)
    found = FindRecord.of(study)
    print(f"candidates that met the test set: {len(found.candidates_tested())}")
    if verified is None and not candidates:
        print(f"FAIL: no trial under {config.search.max_params:,} parameters reached the bar {config.bar:.2f} on "
              f"validation; nothing met the test set (lower --min-robust, or search on with a larger --n-trials)")
        return 1
    if verified is None:
        tried = [r for r in candidates if r.trial in found.verified()]
        print(f"FAIL: none of the {len(tried)} verified candidates held the target"
              + (f"; {len(candidates) - len(tried)} below --min-robust were not verified"
                 if len(tried) < len(candidates) else ""))
        return 1
    export_winner(config, study, verified)
    return 0
