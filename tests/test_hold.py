"""Held means held (space.hold): the estimate, the sequential rule, and find's use of it; and the
target fixed before the test set is met (--rejudge)."""
import math

import pytest

from space.hold import decide, hold_probability, student_t_cdf
from search.verify import until_decided


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 2.5])
def test_student_t_matches_its_closed_forms(t):
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert student_t_cdf(t, 1e6) == pytest.approx(0.5 * (1 + math.erf(t / math.sqrt(2))), abs=1e-5)  # normal


def test_margin_and_agreement_raise_the_estimate_and_few_seeds_keep_it_modest():
    close, far = hold_probability([99.42, 99.46, 99.49], 99.4), hold_probability([99.52, 99.56, 99.59], 99.4)
    assert close < 0.9 < far
    # three seeds that agree exactly do not claim certainty (the prior spread and the t's tails)
    assert hold_probability([99.45] * 3, 99.4) < 0.9
    # the same mean and spread on more seeds is more sure
    assert hold_probability([99.45, 99.50, 99.55] * 3, 99.4) > hold_probability([99.45, 99.50, 99.55], 99.4)


def _runner(minima_by_seed, results, ran):
    def run(seeds):
        ran.append(list(seeds))
        for s in seeds:
            results[s] = [0.0] * 12 + [minima_by_seed[s]] * 3
    return run


def test_seeds_are_added_one_at_a_time_while_undecided_and_stop_at_the_maximum():
    minima = {s: m for s, m in enumerate([99.43, 99.47, 99.45, 99.46, 99.44, 99.47], 1)}
    results, ran = {}, []
    d = until_decided(results, _runner(minima, results, ran), k=3, target=99.4, level=0.9, min_seeds=3, max_seeds=5,
                      at_once=3)
    assert ran == [[1, 2, 3], [4], [5]] and d.verdict == "FAIL" and d.seeds == 5 and "the maximum" in d.why


def test_a_seed_below_the_target_fails_at_once_and_a_wide_margin_passes_on_the_first_seeds():
    results, ran = {}, []
    d = until_decided(results, _runner({1: 99.6, 2: 99.38, 3: 99.6}, results, ran), k=3, target=99.4, level=0.9,
                      min_seeds=3, max_seeds=8, at_once=3)
    assert d.verdict == "FAIL" and "below the target" in d.why and ran == [[1, 2, 3]]
    results, ran = {}, []
    d = until_decided(results, _runner({1: 99.6, 2: 99.62, 3: 99.58}, results, ran), k=3, target=99.4, level=0.9,
                      min_seeds=3, max_seeds=8, at_once=3)
    assert d.verdict == "PASS" and ran == [[1, 2, 3]] and d.probability >= 0.9


@pytest.mark.parametrize("at_once, ran_then", [(1, [[1], [2]]), (2, [[1, 2]]), (8, [[1, 2, 3]])])
def test_the_first_seeds_run_as_many_at_once_as_train_side_by_side_and_a_failed_one_ends_them(at_once, ran_then):
    """With one worker, find-3400's verify trained seed 3 after seed 2 had fallen below the target:
    a test-set use and 0.19 core-hours for a verdict already made."""
    results, ran = {}, []
    d = until_decided(results, _runner({1: 99.44, 2: 99.34, 3: 99.6}, results, ran), k=3, target=99.4, level=0.9,
                      min_seeds=3, max_seeds=8, at_once=at_once)
    assert d.verdict == "FAIL" and ran == ran_then


def test_seeds_already_run_are_not_run_again():
    results, ran = {1: [99.6] * 3, 2: [99.61] * 3}, []
    d = until_decided(results, _runner({3: 99.59}, results, ran), k=3, target=99.4, level=0.9, min_seeds=3,
                      max_seeds=8, at_once=2)
    assert ran == [[3]] and d.verdict == "PASS"


def test_the_rule_refuses_what_it_cannot_use(cli, tmp_path):
    from tests.conftest import make_tiny_mnist
    make_tiny_mnist(tmp_path / "data")
    for flags, says in ((["--hold-level", "1.5"], "--hold-level must be in [0.5, 1)"),
                        (["--seeds", "4", "--max-seeds", "3"], "--max-seeds (3) must be at least --seeds (4)")):
        r = cli("find", "--study-name", "x", "--max-params", "5000", "-o", "m.pt2", "--data-dir", "data", *flags,
                cwd=tmp_path, check=False)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_target_is_fixed_once_the_test_set_is_met_and_rejudging_is_recorded(cli, tmp_path):
    from storage.modelfile import load_model_file
    from tests.conftest import make_tiny_mnist
    from tests.test_find import TINY
    from tests.test_study import load
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    first = cli("find", "--study-name", "f", "--target", "0", "-o", "a.pt2", *TINY, cwd=tmp_path)
    assert "P(a new seed holds)" in first.stdout
    before = (tmp_path / "studies" / "f.db").read_bytes()
    moved = cli("find", "--study-name", "f", "--target", "5", "-o", "b.pt2", *TINY, cwd=tmp_path, check=False)
    assert moved.returncode == 2 and "judged at --target 0.0" in moved.stderr and "--rejudge" in moved.stderr
    assert "Traceback" not in moved.stderr and not (tmp_path / "b.pt2").exists()
    assert (tmp_path / "studies" / "f.db").read_bytes() == before  # nothing stored changed
    again = cli("find", "--study-name", "f", "--target", "5", "--rejudge", "-o", "b.pt2", *TINY, cwd=tmp_path)
    assert "recorded as a test-set use" in again.stdout
    attrs = load(tmp_path, "f").user_attrs
    winner = attrs["find:winner"]
    row = attrs[f"find:verify:{winner}"]
    assert row["target"] == 5 and row["rejudged"][-1]["target"] == 0 and len(attrs["find:rejudged"]) == 1
    _, meta = load_model_file(tmp_path / "b.pt2")
    assert "re-judged after the test set was seen" in meta["protocol"] and meta["test_set_uses"]["rejudged"] == 1
    assert "re-judged from target 0" in (tmp_path / "b.md").read_text()
