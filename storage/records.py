"""What `find` and `verify` store about a study beyond Optuna's own fields: key names and the
verify row's verdict, spelled once.

A verify row (study user attribute VERIFY + str(trial)) holds the test accuracies per epoch of
every seed that met the test set and the verdict on them. Rows made before "held means held"
(no "hold" field) were judged by the old rule, every seed at or above the target; they read as
they were stored, and `find` judges them again by the new rule (space.hold) when it meets them.
"""
from __future__ import annotations

from space.hold import Decision, decide, last_k_minimum

CONFIRM = "find:confirm:"
VERIFY = "find:verify:"
PARTIAL_VERIFY = "find:partial:verify:"
TESTS_USED = "find:tests_used"  # trial numbers of the candidates that met the test set
REJUDGED = "find:rejudged"  # stored test runs judged again at another target / K: each a test-set use
WINNER = "find:winner"


def verify_minima(row: dict) -> list[float]:
    """Per-seed last-K minima of a verify row, in seed order."""
    return [last_k_minimum(accs, row["k"]) for _, accs in sorted(row["results"].items(), key=lambda kv: int(kv[0]))]


def verify_verdict(row: dict) -> str:
    """PASS or FAIL as the row was judged (an old row by the every-seed rule)."""
    return "PASS" if row.get("passed") else "FAIL"


def hold_of(row: dict) -> dict | None:
    """The row's hold estimate (see space.hold) or None for a row judged by the old rule."""
    return row.get("hold")


def judge(row: dict, *, level: float, min_seeds: int, max_seeds: int) -> Decision:
    """The new rule on a row's stored seeds (nothing is trained)."""
    return decide(verify_minima(row), target=row["target"], level=level, min_seeds=min_seeds, max_seeds=max_seeds)


def test_set_uses(attrs: dict) -> dict:
    """How often a study's test set was used: candidates that met it, seeds trained and scored on
    it (each a use), stored runs judged again at another target (each a use)."""
    rows = [v for k, v in attrs.items() if k.startswith(VERIFY) and isinstance(v, dict) and "results" in v]
    seeds = sum(len(r["results"]) for r in rows)
    rejudged = len(attrs.get(REJUDGED, []))
    return {"candidates": len(attrs.get(TESTS_USED, [])), "seeds": seeds, "rejudged": rejudged,
            "total": seeds + rejudged}


def describe_hold(row: dict) -> str:
    """One line: the verdict and what it rests on."""
    hold = hold_of(row)
    minima = verify_minima(row)
    seeds = f"{len(minima)} seeds, last-{row['k']} minima {' / '.join(f'{m:.2f}' for m in minima)}"
    if hold is None:
        return (f"{verify_verdict(row)} by the every-seed rule ({seeds}); no hold estimate: judged before "
                "'held means held'")
    rejudged = f"; re-judged from target {row['rejudged'][-1]['target']}" if row.get("rejudged") else ""
    return (f"{hold['verdict']}: P(a new seed holds >= {row['target']} %) = {hold['hold_probability']:.1%} "
            f"(level {hold['level']:.0%}; {seeds}){rejudged}")
