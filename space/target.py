"""The target this project serves, one home for each of its numbers.

"MNIST, at least 99.4 % test accuracy held in each of the last few epochs, in at most 15 epochs,
with fewer than 8,000 parameters."  Everything else (CLI defaults, the budget check, the epoch
limit, verify's pass rule, plots' reference lines) reads these names.
"""
MAX_PARAMS = 8000  # the budget: a model must have *fewer* than this many parameters
EPOCH_LIMIT = 15  # at most this many epochs of training
TARGET_ACC = 99.4  # percent, on the official test set, in each of the last LAST_K epochs
LAST_K = 3  # "held": the minimum over the last K epochs is what counts


def last_k_for(epochs: int, last_k: int | None = None) -> int:
    """K for a run of `epochs` epochs: the given K, else LAST_K, never more than the epochs run."""
    return min(LAST_K if last_k is None else last_k, epochs)

# The confirm bar `find` uses unless --min-robust says otherwise: a candidate whose seed-robust
# validation score is below target - BAR_BELOW_TARGET never meets the test set. Validation read
# below test by 0.17-0.34 for the five candidates that held (lowest test figure over seeds and the
# last 3 epochs against the robust validation score) and by 0.13-0.17 for two that failed
# (docs/results.md, "What they taught"); every shipped model under 5,000 passed under the bar 99.25.
BAR_BELOW_TARGET = 0.15


def default_bar(target: float) -> float:
    """--min-robust when it is not given: target - BAR_BELOW_TARGET (never below 0)."""
    return max(0.0, round(target - BAR_BELOW_TARGET, 2))
