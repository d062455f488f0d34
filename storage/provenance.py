"""What a training run trained on, and what made it: one function writes each description, from
the run's own settings (never a sentence spelled by hand at the call site).

>>> describe_training(final=True, train_limit=None, epochs=15, seeds=[1, 2, 3])
'all training images (60,000 in MNIST), 15 epochs, seeds 1, 2, 3'
>>> describe_training(final=True, train_limit=2000, epochs=3, seeds=[1])
'the first 2,000 training images, 3 epochs, seed 1'
>>> describe_training(final=False, train_limit=None, epochs=15)
'the search split (5/6 of the training images, 50,000 in MNIST; scored on the rest), 15 epochs'
"""
from __future__ import annotations

TRAIN_IMAGES = 60_000  # MNIST's training set; the search split keeps 5/6 of it for training
SEARCH_TRAIN = 50_000


def describe_training(*, final: bool, train_limit: int | None, epochs: int, seeds: list[int] | None = None,
                      device: str | None = None) -> str:
    """'all training images (60,000 in MNIST), 15 epochs, seeds 1, 2, 3' from a run's settings.
    final: the whole training set (scored on test); else the search's 5/6 : 1/6 split. The counts
    named are MNIST's: a run's own data root may hold fewer (the tests' tiny files)."""
    if final:
        images = (f"the first {train_limit:,} training images" if train_limit
                  else f"all training images ({TRAIN_IMAGES:,} in MNIST)")
    else:
        images = (f"the first {train_limit:,} images of the search split's training part" if train_limit
                  else f"the search split (5/6 of the training images, {SEARCH_TRAIN:,} in MNIST; scored on the rest)")
    parts = [images, f"{epochs} epochs"]
    if seeds:
        parts.append(("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds)))
    if device:
        parts.append(f"on {device}")
    return ", ".join(parts)
