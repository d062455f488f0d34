"""What a training run trained on, and what made it: one function writes each description, from
the run's own settings (never a sentence spelled by hand at the call site).

training_record is the record every training run keeps (a trial, a confirm or verify seed, a
`verify` or `train` run, a model file): the images it really trained on, its epochs, seeds and
device, and the versions of mnist-nas (and its git commit), torch and optuna that made it, with
the sentence describe_training writes from those facts.

>>> describe_training(final=True, train_limit=None, epochs=15, seeds=[1, 2, 3])
'all training images (60,000 in MNIST), 15 epochs, seeds 1, 2, 3'
>>> describe_training(final=True, train_limit=2000, epochs=3, seeds=[1])
'the first 2,000 training images, 3 epochs, seed 1'
>>> describe_training(final=False, train_limit=None, epochs=15)
'the search split (5/6 of the training images, 50,000 in MNIST; scored on the rest), 15 epochs'

With the counts of the data the run really used (search.data.training_counts), the sentence names
them instead of MNIST's:

>>> describe_training(final=True, train_limit=2000, epochs=3, seeds=[1], device="cpu", images=2000, available=60000)
'the first 2,000 of the 60,000 training images, 3 epochs, seed 1, on cpu'
>>> describe_training(final=False, train_limit=None, epochs=15, seeds=[7], images=50000, available=50000)
'all 50,000 training images of the search split (scored on its validation part), 15 epochs, seed 7'
>>> describe_versions({"mnist-nas": "0.1.0", "commit": "0123456789abcdef", "modified": False, "torch": "2.14.1",
...                    "optuna": "5.0.0"})
'mnist-nas 0.1.0 (commit 0123456789ab), torch 2.14.1, optuna 5.0.0'
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

TRAIN_IMAGES = 60_000  # MNIST's training set; the search split keeps 5/6 of it for training
SEARCH_TRAIN = 50_000
CODE = ("space", "search", "storage", "study.py", "pyproject.toml")  # what a run's code is, for "modified"


def describe_training(*, final: bool, train_limit: int | None, epochs: int, seeds: list[int] | None = None,
                      device: str | None = None, images: int | None = None, available: int | None = None) -> str:
    """'all training images (60,000 in MNIST), 15 epochs, seeds 1, 2, 3' from a run's settings.
    final: the whole training set (scored on test); else the search's 5/6 : 1/6 split. images and
    available: how many images the run trained on and how many its split offered, counted from its
    own data (search.data.training_counts); without them the counts named are MNIST's."""
    if images is not None and available is not None:
        if final:
            images_text = (f"all {available:,} training images" if images >= available
                           else f"the first {images:,} of the {available:,} training images")
        else:
            scored = " (scored on its validation part)"
            images_text = (f"all {available:,} training images of the search split{scored}" if images >= available
                           else f"the first {images:,} of the search split's {available:,} training images{scored}")
    elif final:
        images_text = (f"the first {train_limit:,} training images" if train_limit
                       else f"all training images ({TRAIN_IMAGES:,} in MNIST)")
    else:
        images_text = (f"the first {train_limit:,} images of the search split's training part" if train_limit
                       else f"the search split (5/6 of the training images, {SEARCH_TRAIN:,} in MNIST; scored on the rest)")
    parts = [images_text, f"{epochs} epoch{'s' * (epochs != 1)}"]
    if seeds:
        parts.append(("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds)))
    if device:
        parts.append(f"on {device}")
    return ", ".join(parts)


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def made_by() -> dict:
    """The versions that make a run in this process: mnist-nas (package metadata), the git commit
    of its checkout and whether its code (CODE) differs from that commit (None, None when it is not
    run from a git checkout of its own, e.g. installed from a wheel), torch and optuna."""
    from importlib import metadata
    try:
        version = metadata.version("mnist-nas")
    except metadata.PackageNotFoundError:
        version = None
    root = Path(__file__).resolve().parents[1]
    commit = modified = None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # its own checkout, not a repository it happens to sit in
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--", *CODE) if commit else None
        modified = None if status is None else bool(status)
    import optuna
    import torch
    return {"mnist-nas": version, "commit": commit, "modified": modified, "torch": torch.__version__,
            "optuna": optuna.__version__}


def describe_versions(made: dict) -> str:
    """'mnist-nas 0.1.0 (commit 0123456789ab, code modified since), torch 2.14.1, optuna 5.0.0'."""
    if made.get("commit"):
        where = f"commit {made['commit'][:12]}" + (", code modified since" if made.get("modified") else "")
    else:
        where = "no git commit known"
    return (f"mnist-nas {made.get('mnist-nas') or '?'} ({where}), torch {made.get('torch') or '?'}, "
            f"optuna {made.get('optuna') or '?'}")


def training_record(*, final: bool, train_limit: int | None, epochs: int, seeds: list[int],
                    devices: dict | str | None = None, images: int | None = None, available: int | None = None,
                    made: dict | None = None) -> "Provenance":
    """The record of a training run (one seed or several alike): the facts and, from them, the
    sentence (storage.records.Provenance; .to_stored() is what a study or a file keeps). devices:
    where each seed trained ({seed: device}) or one device for all. made: the versions that made it
    (default: this process's, made_by())."""
    from storage.records import Provenance
    seeds = sorted(int(s) for s in seeds)
    if isinstance(devices, str):
        devices = {str(s): devices for s in seeds}
    devices = {str(k): v for k, v in (devices or {}).items()}
    where = ", ".join(sorted(set(devices.values()))) or None
    made = dict(made or made_by())
    trained_on = describe_training(final=final, train_limit=train_limit, epochs=epochs, seeds=seeds, device=where,
                                   images=images, available=available)
    return Provenance.from_stored({
        "trained_on": trained_on, "images": images, "available": available, "final": final,
        "train_limit": train_limit, "epochs": epochs, "seeds": seeds, "devices": devices, "made_by": made,
        "text": f"{trained_on}; made by {describe_versions(made)}"})
