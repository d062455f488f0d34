import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None):
    """Write an IDX file as MNIST stores it (big-endian header, uint8 payload)."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


def make_tiny_mnist(root: Path, n_train: int = 120, n_test: int = 30, seed: int = 0) -> Path:
    """A tiny, learnable MNIST-shaped dataset: each class is a bright bar at its own row."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 3 + 2 * c: 5 + 2 * c, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def tiny_root(tmp_path):
    return make_tiny_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def real_root():
    root = os.environ.get("MNIST_DATA_DIR")
    if not root or not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real MNIST not given (set MNIST_DATA_DIR)")
    return Path(root)


@pytest.fixture(scope="session")
def real_mnist(real_root):
    from search.data import load_mnist
    return load_mnist(real_root, download=False)
