"""Confirm as a race (search/race.py): rounds of one seed across candidates, exact early stops."""
from search.race import Race


def _drive(race: Race, scores: dict, workers: int) -> list[tuple[int, int]]:
    """Run the race as the pool would, `workers` jobs in flight, jobs ending in the order started."""
    order, running = [], []
    while True:
        while len(running) < workers and (job := race.next_job(set(running))):
            running.append(job)
            order.append(job)
        if not running:
            return order
        trial, seed = running.pop(0)
        race.record(trial, seed, scores[trial][seed])


def test_seeds_run_in_rounds_across_candidates_and_a_candidate_below_the_bar_stops_at_once():
    scores = {1: {11: 99.3, 12: 99.3}, 2: {11: 99.1, 12: 99.5}, 3: {11: 99.4, 12: 99.2}}
    race = Race(candidates=[1, 2, 3], seeds=[11, 12], bar=99.25, first={1: 99.4, 2: 99.35, 3: 99.3})
    order = _drive(race, scores, workers=1)
    assert order == [(1, 11), (2, 11), (3, 11), (1, 12), (3, 12)]  # trial 2 stopped after its first seed
    assert race.stopped(2) and race.skipped(2) == [12] and "99.10" in race.why_stopped(2)
    assert race.stopped(3) and race.skipped(3) == []  # it ran every seed, and fell below on the last
    assert not race.stopped(1) and race.robust_so_far(1) == 99.3


def test_without_a_bar_nothing_stops_and_every_seed_runs():
    scores = {1: {11: 90.0, 12: 90.0}, 2: {11: 99.0, 12: 99.0}}
    race = Race(candidates=[1, 2], seeds=[11, 12], bar=None, first={1: 99.0, 2: 99.0})
    assert len(_drive(race, scores, workers=2)) == 4 and not race.stopped(1)


def test_a_freed_worker_takes_the_next_candidates_seed_and_resumed_scores_count():
    # trial 5 resumes with a seed already below the bar: it never runs; two workers share the rest
    race = Race(candidates=[4, 5, 6], seeds=[11, 12], bar=99.0, first={4: 99.2, 5: 99.2, 6: 99.2},
                scores={5: {11: 98.0}})
    scores = {4: {11: 98.5, 12: 99.5}, 6: {11: 99.1, 12: 99.1}}
    order = _drive(race, scores, workers=2)
    assert (5, 11) not in order and (5, 12) not in order and race.skipped(5) == [12]
    assert order == [(4, 11), (6, 11), (6, 12)]  # 4 stopped after its first seed; 6's second took its place
