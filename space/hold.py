"""Held means held: the one pass rule of `verify` and `find`, and the estimate behind it.

A model *holds* the target when a seed nobody has tried yet would reach `target` in each of the
last K epochs. Each verify seed gives one number, its last-K minimum (test accuracy, %). From
those minima we estimate the probability that one more seed's minimum reaches the target, and PASS
needs that estimate to reach `level` (90 % by default) with no seed below the target.

Method: the posterior predictive of a normal model of the per-seed minima (unknown mean, unknown
spread) under a conjugate prior on the spread. The prediction for a new seed is Student's t with
    dof   = PRIOR_DOF + n - 1
    scale = s_pooled * sqrt(1 + 1/n),   s_pooled**2 = (PRIOR_DOF * PRIOR_SD**2 + (n - 1) * s**2) / dof
around the mean of the n minima (s: their sample standard deviation). Two things keep small
samples honest: the t's heavy tails at few degrees of freedom (the uncertainty of the mean and of
the spread both widen the prediction), and the prior on the spread, so that three seeds that
happen to agree do not claim certainty.

PRIOR_SD is the pooled within-model standard deviation of per-seed last-3 minima over every verify
run this project had made when it was set: 0.047 points, 30 seeds of 10 models (20 degrees of
freedom; models' own spreads ran 0.006-0.095). PRIOR_DOF = 3 weighs that prior like 3 degrees of
freedom only, well below its evidence, because the spread varies between models.

Sequential use (`decide`): after the first `min_seeds` seeds, PASS when the estimate reaches
`level`; FAIL as soon as a seed is below the target (held means every seed so far held); while
undecided, one more seed, up to `max_seeds`; undecided at the maximum is FAIL. Every seed is a
test-set use.

>>> round(hold_probability([99.45, 99.48, 99.53], 99.4), 3)
0.924
>>> decide([99.45, 99.48, 99.53], target=99.4).verdict
'PASS'
>>> decide([99.42, 99.46, 99.49], target=99.4).verdict  # too close to the target: one more seed
'MORE'
>>> decide([99.42, 99.46, 99.39], target=99.4).verdict
'FAIL'
"""
from __future__ import annotations

import math
from dataclasses import dataclass

HOLD_LEVEL = 0.90  # PASS needs P(a new seed holds) >= this (`--hold-level`)
MIN_SEEDS = 3  # seeds before any verdict (`--seeds`)
MAX_SEEDS = 8  # seeds at most while undecided (`--max-seeds`); each is a test-set use
PRIOR_SD = 0.047  # pooled seed-to-seed SD of last-3 minima, 30 seeds of 10 verified models (see above)
PRIOR_DOF = 3  # the prior's weight in degrees of freedom: deliberately weak


def last_k_minimum(accs: list[float], k: int) -> float:
    """One seed's number: its lowest accuracy over the last k epochs."""
    return min(accs[-k:])


def seed_held(accs: list[float], k: int, target: float) -> bool:
    """The target's rule for one seed: at least `target` in each of the last k epochs."""
    return last_k_minimum(accs, k) >= target


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def student_t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom.

    >>> round(student_t_cdf(1.0, 1), 6) == round(0.5 + math.atan(1.0) / math.pi, 6)  # Cauchy
    True
    """
    tail = 0.5 * _betainc(dof / 2, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def hold_probability(minima: list[float], target: float, *, prior_sd: float = PRIOR_SD,
                     prior_dof: float = PRIOR_DOF) -> float:
    """Estimated probability that one more seed's last-K minimum reaches `target` (see the module)."""
    n = len(minima)
    if n == 0:
        raise ValueError("no seeds to estimate from")
    mean = sum(minima) / n
    ss = sum((m - mean) ** 2 for m in minima)  # (n - 1) * s**2
    dof = prior_dof + n - 1
    scale = math.sqrt((prior_dof * prior_sd ** 2 + ss) / dof) * math.sqrt(1 + 1 / n)
    return student_t_cdf((mean - target) / scale, dof)


@dataclass(frozen=True)
class Decision:
    """What the seeds so far say. verdict: PASS, FAIL, or MORE (run one more seed)."""
    verdict: str
    probability: float  # the estimate that a new seed holds
    seeds: int
    level: float
    why: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "hold_probability": round(self.probability, 4), "seeds": self.seeds,
                "level": self.level, "method": METHOD, "why": self.why}


METHOD = (f"Student-t posterior predictive of the per-seed last-K minima, prior spread {PRIOR_SD} "
          f"({PRIOR_DOF} dof)")


def decide(minima: list[float], *, target: float, level: float = HOLD_LEVEL, min_seeds: int = MIN_SEEDS,
           max_seeds: int = MAX_SEEDS) -> Decision:
    """The verdict on the per-seed last-K minima so far (see the module)."""
    n = len(minima)
    p = hold_probability(minima, target) if n else 0.0
    if any(m < target for m in minima):
        low = min(minima)
        return Decision("FAIL", p, n, level, f"a seed fell below the target ({low:.2f} < {target})")
    if n < min_seeds:
        return Decision("MORE", p, n, level, f"{n} of at least {min_seeds} seeds")
    if p >= level:
        return Decision("PASS", p, n, level, f"P(a new seed holds) {p:.1%} >= {level:.0%}")
    if n < max_seeds:
        return Decision("MORE", p, n, level, f"P(a new seed holds) {p:.1%} < {level:.0%}: one more seed")
    return Decision("FAIL", p, n, level, f"P(a new seed holds) {p:.1%} < {level:.0%} after {n} seeds, the maximum")


def check_hold_settings(*, level: float, min_seeds: int, max_seeds: int) -> None:
    """Refuse settings the rule cannot use (one line each)."""
    if isinstance(level, bool) or not 0.5 <= level < 1:
        raise ValueError(f"--hold-level must be in [0.5, 1), got {level!r}")
    if max_seeds < min_seeds:
        raise ValueError(f"--max-seeds ({max_seeds}) must be at least --seeds ({min_seeds})")
