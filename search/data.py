"""MNIST in memory: the four IDX files read once as uint8 tensors, split with a fixed seed.

The files are read directly (their headers were validated first): importing torchvision's dataset
took ~3 s per process on this machine, paid by every search worker and test subprocess.
torchvision is used only to download the files where that is possible.

Normalisation and augmentation happen per batch in search.train (vectorised), never per sample.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: DataError alone must not cost ~3 s
    import torch

DATA_ENV = "MNIST_DATA_DIR"
DEFAULT_ROOT = "./data"
FILES = {  # name -> (IDX magic, is images)
    "train-images-idx3-ubyte": (2051, True),
    "train-labels-idx1-ubyte": (2049, False),
    "t10k-images-idx3-ubyte": (2051, True),
    "t10k-labels-idx1-ubyte": (2049, False),
}
SPLIT_SEED = 0  # the train/validation split never changes with the training seed


class DataError(RuntimeError):
    """Data that cannot be used; the message is one line naming the root and the files needed."""


def data_root(flag: str | None = None) -> Path:
    return Path(flag or os.environ.get(DATA_ENV) or DEFAULT_ROOT)


def _fail(root: Path, problem: str) -> DataError:
    need = ", ".join(FILES)
    return DataError(f"MNIST data unusable under {root} ({problem}); "
                     f"need {root / 'MNIST' / 'raw'}/{{{need}}} (set --data-dir or {DATA_ENV})")


def _read_header(path: Path, magic: int, images: bool) -> int:
    """Validate one IDX file's header against its size; return its item count."""
    size = path.stat().st_size
    header = 16 if images else 8
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < header:
        raise ValueError(f"{path.name} is truncated")
    fields = [int.from_bytes(head[i:i + 4], "big") for i in range(0, header, 4)]
    if fields[0] != magic:
        raise ValueError(f"{path.name} has IDX magic {fields[0]}, expected {magic}")
    count = fields[1]
    if images and fields[2:] != [28, 28]:
        raise ValueError(f"{path.name} holds {fields[2]}x{fields[3]} images, expected 28x28")
    expected = header + count * (784 if images else 1)
    if size != expected:
        raise ValueError(f"{path.name} is {size} bytes but its header says {count} items "
                         f"({expected} bytes)")
    return count


def check_files(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    missing = [n for n in FILES if not (raw / n).is_file()]
    if missing:
        raise _fail(root, f"missing {', '.join(missing)}")
    counts = {}
    for name, (magic, images) in FILES.items():
        try:
            counts[name] = _read_header(raw / name, magic, images)
        except ValueError as e:
            raise _fail(root, str(e)) from None
    for split in ("train", "t10k"):
        ni, nl = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if ni != nl or ni == 0:
            raise _fail(root, f"{split} has {ni} images but {nl} labels")


@dataclass
class MNIST:
    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    root: Path


def _download(root: Path) -> None:
    from torchvision.datasets import MNIST as TVMNIST
    try:
        TVMNIST(str(root), train=True, download=True)
    except Exception as e:  # any network or disk failure: report it as data we cannot get
        raise _fail(root, f"files missing and the download failed: {type(e).__name__}") from None


def ensure_files(root: str | Path | None = None, download: bool = True) -> Path:
    """Download the files if they are missing (and allowed), validate them, return the root.
    Cheap: headers only, so a parent process can check before its workers load the data."""
    root = data_root(str(root) if root else None)
    raw = root / "MNIST" / "raw"
    if download and not all((raw / n).is_file() for n in FILES):
        _download(root)
    check_files(root)
    return root


def _read_idx(path: Path, images: bool) -> torch.Tensor:
    """An IDX file's items (header already validated): (N, 28, 28) uint8 images or (N,) int64 labels."""
    import torch
    data = bytearray(path.read_bytes())
    header = 16 if images else 8
    items = torch.frombuffer(data, dtype=torch.uint8, offset=header)
    return items.view(-1, 28, 28) if images else items.long()  # the tensor keeps the buffer alive


def load_mnist(root: str | Path | None = None, download: bool = True) -> MNIST:
    """Load all four files into memory, validating them first so bad files give one clear line."""
    root = ensure_files(root, download)
    raw = root / "MNIST" / "raw"
    parts = [_read_idx(raw / name, images) for name, (_, images) in FILES.items()]
    for labels in parts[1::2]:
        if labels.numel() and (labels.min() < 0 or labels.max() > 9):
            raise _fail(root, "labels outside 0..9")
    return MNIST(*parts, root=root)


@dataclass
class Split:
    """What one training run sees: training tensors and the evaluation set, named."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    eval_name: str  # "val" or "test"
    available: int = 0  # training images the split offered before --train-limit (provenance records it)


def split_sizes(n_train: int, final: bool, train_limit: int | None) -> tuple[int, int]:
    """(images a run trains on, images its split offers) for a training set of n_train images:
    all of them when final, else the search split's training part (n_train - n_train // 6), the
    first train_limit of those when a limit is given. make_split and training_counts both use it."""
    available = n_train if final else n_train - n_train // 6
    return (min(train_limit, available) if train_limit else available), available


def training_counts(root: str | Path | None = None, final: bool = False,
                    train_limit: int | None = None) -> tuple[int, int]:
    """split_sizes for the data under root, from the training images file's header alone (cheap:
    a parent process records what its workers train on without loading the data)."""
    raw = data_root(str(root) if root else None) / "MNIST" / "raw"
    name = "train-images-idx3-ubyte"
    return split_sizes(_read_header(raw / name, *FILES[name]), final, train_limit)


def make_split(data: MNIST, final: bool = False, train_limit: int | None = None,
               eval_limit: int | None = None) -> Split:
    """final: all training images, scored on test. Otherwise a fixed 5/6 : 1/6 split of the
    training images (50,000 / 10,000 on the real data), scored on the validation part."""
    if final:
        x, y, ex, ey, name = data.train_images, data.train_labels, data.test_images, data.test_labels, "test"
    else:
        n = len(data.train_labels)
        import torch
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_val = n // 6
        tr, va = perm[n_val:], perm[:n_val]
        x, y, ex, ey, name = (data.train_images[tr], data.train_labels[tr],
                              data.train_images[va], data.train_labels[va], "val")
    if train_limit is not None:
        if isinstance(train_limit, bool) or not isinstance(train_limit, int) or train_limit < 1:
            # x[:-5] would train on all but 5 images: a limit is a positive count or none
            raise DataError(f"--train-limit must be a positive integer, got {train_limit!r}")
        x, y = x[:train_limit], y[:train_limit]
    if eval_limit:
        ex, ey = ex[:eval_limit], ey[:eval_limit]
    images, available = split_sizes(len(data.train_labels), final, train_limit)
    assert len(y) == images, "split_sizes must say what make_split does"
    return Split(x, y, ex, ey, name, available=available)
