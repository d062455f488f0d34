import numpy as np
import pytest
import torch

from search.data import DataError, load_mnist, make_split, FILES
from tests.conftest import make_tiny_mnist, write_idx


def test_tiny_idx_files_load_as_uint8_tensors(tiny_root):
    d = load_mnist(tiny_root, download=False)
    assert d.train_images.shape == (120, 28, 28) and d.train_images.dtype == torch.uint8
    assert d.train_labels.dtype == torch.int64 and d.test_labels.shape == (30,)
    assert d.train_labels.tolist() == [i % 10 for i in range(120)]


def test_split_is_fixed_disjoint_and_five_to_one(tiny_root):
    d = load_mnist(tiny_root, download=False)
    a, b = make_split(d), make_split(d)
    assert len(a.train_labels) == 100 and len(a.eval_labels) == 20 and a.eval_name == "val"
    assert torch.equal(a.train_images, b.train_images)  # fixed seed
    rows = {bytes(x.numpy()) for x in a.train_images}
    assert not any(bytes(x.numpy()) in rows for x in a.eval_images)
    f = make_split(d, final=True, train_limit=50)
    assert f.eval_name == "test" and len(f.train_labels) == 50 and len(f.eval_labels) == 30


def _expect_one_line(root, needle):
    with pytest.raises(DataError) as e:
        load_mnist(root, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg and needle in msg
    for name in FILES:
        assert name in msg


def test_missing_file(tiny_root):
    (tiny_root / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    _expect_one_line(tiny_root, "missing t10k-labels-idx1-ubyte")


def test_truncated_file(tiny_root):
    p = tiny_root / "MNIST/raw/train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    _expect_one_line(tiny_root, "bytes but its header says")


def test_truncated_header(tiny_root):
    p = tiny_root / "MNIST/raw/train-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:5])
    _expect_one_line(tiny_root, "truncated")


def test_wrong_magic(tiny_root):
    write_idx(tiny_root / "MNIST/raw/t10k-images-idx3-ubyte", np.zeros((30, 28, 28)), magic=2049)
    _expect_one_line(tiny_root, "magic 2049, expected 2051")


def test_image_and_label_counts_disagree(tiny_root):
    write_idx(tiny_root / "MNIST/raw/train-labels-idx1-ubyte", np.zeros(119))
    _expect_one_line(tiny_root, "120 images but 119 labels")


def test_labels_out_of_range(tiny_root):
    write_idx(tiny_root / "MNIST/raw/train-labels-idx1-ubyte", np.full(120, 12))
    _expect_one_line(tiny_root, "labels outside 0..9")


def test_unreachable_download_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST as TV
    monkeypatch.setattr(TV, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path / "empty", download=True)
    assert "download failed" in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_bad_data_in_one_line_with_exit_2(cli, tmp_path):
    root = make_tiny_mnist(tmp_path / "d")
    (root / "MNIST/raw/train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    r = cli("train", "model6", "--epochs", "1", "--data-dir", root, cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: MNIST data unusable under")
    assert "Traceback" not in r.stderr


@pytest.mark.real
def test_real_mnist_shapes_and_label_counts(real_mnist):
    d = real_mnist
    assert d.train_images.shape == (60000, 28, 28) and d.test_images.shape == (10000, 28, 28)
    assert d.train_images.dtype == torch.uint8
    assert d.train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    s = make_split(d)
    assert len(s.train_labels) == 50000 and len(s.eval_labels) == 10000
    mem = sum(t.numel() * t.element_size() for t in
              (d.train_images, d.train_labels, d.test_images, d.test_labels))
    assert mem < 300e6
