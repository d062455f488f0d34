"""--device: names checked up front, the CPU path unchanged, and (where a GPU exists) training on CUDA.

The CUDA tests skip on machines without one (CI); they were run on a lent H100 (docs/gpu.md)."""
import pytest
import torch

from search.data import load_mnist, make_split
from search.device import DEVICE_ENV
from search.train import TrainConfig, train
from space.baselines import BASELINES
from tests.conftest import make_tiny_mnist

SPEC = BASELINES["model6"].spec
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")


@pytest.mark.parametrize("flag,env,needle", [
    (["--device", "tpu"], {}, "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "cuda:0;rm"], {}, "--device must be cpu, cuda or cuda:N"),
    ([], {DEVICE_ENV: "gpu0"}, "--device must be cpu, cuda or cuda:N, got 'gpu0'"),
    (["--device", "cuda:7"], {}, "has 1 CUDA device" if HAS_CUDA and torch.cuda.device_count() == 1
     else ("CUDA device(s)" if HAS_CUDA else "CUDA is not available on this machine")),
])
def test_a_bad_device_is_one_line_exit_2_and_nothing_is_stored(cli, tmp_path, flag, env, needle):
    make_tiny_mnist(tmp_path / "data")
    for cmd in (["search", "--study-name", "d", "--n-trials", "1", "--epochs", "1", "--data-dir", "data"],
                ["train", "--epochs", "1", "--data-dir", "data", "--out", "run"]):
        r = cli(*cmd, *flag, cwd=tmp_path, env=env, check=False, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "studies").exists() and not (tmp_path / "run").exists()


def test_device_cpu_named_is_the_default_bit_for_bit(tiny_root, monkeypatch):
    """--device cpu (through the variable the workers inherit) is the default run. (That the CPU
    path is what it was before --device existed was checked by hand at the change, commit 727d163:
    a run's losses and weights compared with the code before it.)"""
    split = make_split(load_mnist(tiny_root, download=False))
    cfg = TrainConfig(epochs=2, batch_size=16, seed=5, threads=1, rotation=7, shift=0.05, scale=0.05)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    default = train(SPEC, cfg, split, quiet=True)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    named = train(SPEC, cfg, split, quiet=True)
    assert default.device == named.device == "cpu"
    assert default.history[-1]["train_loss"] == named.history[-1]["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(default.model.state_dict().values(), named.model.state_dict().values()))


@needs_cuda
def test_training_on_cuda_learns_records_the_device_and_hands_back_a_cpu_model(tiny_root, monkeypatch):
    from space.model import evaluate
    split = make_split(load_mnist(tiny_root, download=False))
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    cfg = TrainConfig(epochs=3, batch_size=16, seed=5, rotation=7, shift=0.05, scale=0.05, dropout=0.05)
    r = train(SPEC, cfg, split, quiet=True)
    assert r.device.startswith("cuda (") and len(r.history) == 3
    assert all(p.device.type == "cpu" for p in r.model.state_dict().values())
    import pickle  # nothing of the GPU is left in the model (a dropout pool is not a buffer)
    pickle.loads(pickle.dumps(r.model))
    assert all(t.device.type == "cpu" for m in r.model.modules() for t in vars(m).values() if torch.is_tensor(t))
    # the GPU's last validation figure is what the returned model scores on the CPU
    _, acc, _ = evaluate(r.model, split.eval_images, split.eval_labels)
    assert abs(acc - r.history[-1]["val_acc"]) <= 100 / len(split.eval_labels)
    assert r.history[-1]["train_acc"] > r.history[0]["train_acc"]


@needs_cuda
def test_find_on_cuda_with_two_workers_runs_every_stage_and_records_where(cli, tmp_path):
    from tests.test_find import TINY
    from tests.test_study import load
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    args = [a if a != "1" or TINY[i - 1] != "--workers" else "2" for i, a in enumerate(TINY)]
    r = cli("find", "--study-name", "g", "--target", "0", "-o", "win.pt2", "--device", "cuda", *args, cwd=tmp_path,
            check=False, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(tmp_path, "g")
    winner = study.user_attrs["find:winner"]
    assert all(t.user_attrs["device"].startswith("cuda (") for t in study.trials if "spec" in t.user_attrs)
    assert set(study.user_attrs[f"find:confirm:{winner}"]["devices"]) == {"10001"}
    assert study.user_attrs[f"find:verify:{winner}"]["devices"].keys() == {"1", "2"}
    assert (tmp_path / "win.pt2").is_file()


def test_a_dropout_pool_never_stays_behind_when_its_module_moves():
    """The pool is scratch, not model state: any .to() drops it, so a model moved off a GPU holds
    nothing of it (checked here on the CPU; the CUDA test above pickles a GPU-trained model)."""
    from space.model import PooledDropout
    drop = PooledDropout(0.1).train()
    drop(torch.ones(8, 4))
    assert drop.pool.numel() >= 32
    drop.to("cpu")
    assert drop.pool.numel() == 0
    assert drop(torch.ones(8, 4)).shape == (8, 4) and drop.pool.numel() >= 32  # redrawn where the batch is
