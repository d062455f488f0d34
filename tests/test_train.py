import dataclasses
import json
import math

import pytest
import torch

from search.data import load_mnist, make_split
from search.train import TrainConfig, ConfigError, affine_batch, train, rotate_batch, EPOCH_LIMIT
from space.baselines import BASELINES

SPEC = BASELINES["model6"].spec


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_root):
    split = make_split(load_mnist(tiny_root, download=False))
    run = lambda seed: train(SPEC, TrainConfig(epochs=2, batch_size=16, seed=seed, threads=1), split, quiet=True)
    a, b, c = run(3), run(3), run(4)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


def test_epoch_limit_is_enforced_unless_overridden():
    with pytest.raises(ConfigError, match="over the limit of 15"):
        TrainConfig(epochs=EPOCH_LIMIT + 1)
    assert TrainConfig(epochs=20, allow_long=True).epochs == 20
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)


def test_rotation_is_per_image_and_fills_with_the_background():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 4:24] = 1.0
    g = torch.Generator().manual_seed(0)
    r = rotate_batch(x, 30.0, 0.0, g)
    # different angles per image: the rotated images are not all the same
    assert not torch.allclose(r[0], r[1])
    # background stays background (fill 0), no new bright corners appear
    assert r[:, :, 0, 0].abs().max() < 1e-6
    # a fill of 0.5 shows in the uncovered corners when rotating a blank image
    blank = rotate_batch(torch.zeros(4, 1, 28, 28), 45.0, 0.5, torch.Generator().manual_seed(1))
    assert math.isclose(blank[0, 0, 0, 0].item(), 0.5, abs_tol=1e-5)
    assert blank[0, 0, 14, 14].abs() < 1e-6
    # zero degrees is the identity
    assert torch.allclose(rotate_batch(x, 0.0, 0.0, g), x, atol=1e-5)


def test_step_lr_changes_the_learning_rate(tiny_root):
    split = make_split(load_mnist(tiny_root, download=False))
    res = train(SPEC, TrainConfig(epochs=3, batch_size=32, step_size=1, gamma=0.5, lr=0.04), split, quiet=True)
    assert [round(h["lr"], 6) for h in res.history] == [0.04, 0.02, 0.01]


def _twice_and_other_seed(split, **recipe):
    run = lambda seed: train(SPEC, TrainConfig(epochs=2, batch_size=16, seed=seed, threads=1, **recipe),
                             split, quiet=True)
    a, b, c = run(5), run(5), run(6)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["lr_end"] for h in a.history] == [h["lr_end"] for h in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]
    return a


def test_affine_augmentation_is_deterministic_per_seed(tiny_root):
    split = make_split(load_mnist(tiny_root, download=False))
    _twice_and_other_seed(split, rotation=10.0, shift=0.1, scale=0.1)


def test_onecycle_is_deterministic_and_stepped_per_batch(tiny_root):
    split = make_split(load_mnist(tiny_root, download=False))
    res = _twice_and_other_seed(split, scheduler="onecycle", max_lr=0.2, pct_start=0.3)
    first, second = res.history
    # per batch: within an epoch the rate moves (start != end), and it starts at max_lr / 25
    assert math.isclose(first["lr"], 0.2 / 25, rel_tol=1e-6) and first["lr_end"] != first["lr"]
    assert second["lr_end"] < second["lr"]  # the annealing half of the cycle


def test_step_lr_is_deterministic_and_stepped_per_epoch(tiny_root):
    split = make_split(load_mnist(tiny_root, download=False))
    res = _twice_and_other_seed(split, scheduler="step", step_size=1, gamma=0.5, lr=0.04)
    assert [h["lr"] for h in res.history] == [h["lr_end"] for h in res.history]  # constant within an epoch
    assert [round(h["lr"], 6) for h in res.history] == [0.04, 0.02]


def test_shift_and_scale_move_and_zoom_each_image_on_its_own():
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0  # a centred square
    g = torch.Generator().manual_seed(0)
    shifted = affine_batch(x, g, shift=0.2)
    rows = torch.arange(28.0).view(1, 28, 1)
    centres = [((img * rows).sum() / img.sum() - 13.5).item() for img in shifted]  # centre of mass, rows
    assert max(map(abs, centres)) > 2.0 and len({round(c, 3) for c in centres}) > 25  # each its own shift
    zoomed = affine_batch(x, torch.Generator().manual_seed(0), scale=0.5)
    mass = zoomed.sum((1, 2, 3))
    assert mass.max() > 1.2 * 16 and mass.min() < 0.8 * 16  # some grew, some shrank
    assert torch.allclose(affine_batch(x, g), x, atol=1e-5)  # nothing asked: the identity


@pytest.mark.parametrize("bad, needle", [
    (dict(batch_size=0), "batch_size"), (dict(lr=-1.0), "lr"), (dict(dropout=1.0), "dropout"),
    (dict(scheduler="cosine"), "scheduler"), (dict(batch_size=True), "batch_size"),
    (dict(lr="0.1"), "lr"), (dict(lr=float("nan")), "lr"), (dict(shift=0.9), "shift"),
    (dict(threads=-1), "threads"), (dict(epochs=2.5), "epochs"), (dict(ema=1.0), "ema"), (dict(ema=-0.1), "ema"),
    (dict(precision="fp16"), "precision"), (dict(precision=None), "precision"),
])
def test_bad_recipes_are_refused_up_front(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**bad)


def test_train_cli_writes_metrics_json_and_png(cli, tiny_root, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "model6", "--epochs", "2", "--final", "--seed", "5", "--out", out, "--data-dir", tiny_root,
            check=False)
    assert r.returncode == 0, r.stderr
    assert "test_acc" in r.stdout  # the epoch table header
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_name"] == "test" and m["params"] == 7416 and m["config"]["seed"] == 5
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"):
        assert all(isinstance(e[key], float) for e in m["epochs"])
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_train_cli_refuses_over_budget_and_too_many_epochs(cli, tiny_root):
    r = cli("train", "model1", "--epochs", "1", "--data-dir", tiny_root, check=False)
    assert r.returncode == 2 and "over the budget" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", "--epochs", "16", "--data-dir", tiny_root, check=False)
    assert r.returncode == 2 and "over the limit" in r.stderr


@pytest.mark.real
def test_one_epoch_on_a_real_mnist_subset_learns(real_mnist):
    split = make_split(real_mnist, train_limit=6000)
    res = train(SPEC, TrainConfig(epochs=1, threads=1), split, quiet=True)
    h = res.history[0]
    assert h["val_acc"] > 75.0, h  # one epoch on 6,000 images (47 steps): measured 83.9; chance is 10
    assert 0 < h["train_loss"] < 1.5  # measured 1.03; ln(10) = 2.30 at chance


def test_bench_runs_both_pipelines_and_reports_json(cli, tiny_root):
    r = cli("bench", "--steps", "1", "--json", "--data-dir", tiny_root, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("conventional_img_s", "engine_img_s", "engine_1thread_img_s", "engine_1thread_nn_dropout_img_s",
                "engine_1thread_per_process_total_img_s"):
        assert out[key] > 0
    assert out["ratio_engine"] == out["engine_img_s"] / out["conventional_img_s"]
    assert out["dataset_in_memory_mb"] < 1  # tiny data; the real MNIST is ~55 MB


def test_bench_families_costs_a_model_of_each_family(cli, tiny_root):
    r = cli("bench", "--families", "--steps", "1", "--json", "--data-dir", tiny_root, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["model"] for row in rows] == ["model6", "public3k7"]
    for row in rows:
        assert row["train_img_s"] > 0 and row["trial_15_epochs_s"] > row["val_eval_s"] * 15


@pytest.mark.parametrize("n_images, epochs, batch", [(10, 1, 128), (50, 2, 128), (70, 2, 32), (300, 3, 64)])
def test_onecycle_survives_runs_of_a_few_steps(tiny_root, n_images, epochs, batch):
    split = make_split(load_mnist(tiny_root, download=False), train_limit=n_images)
    for pct in (0.1, 0.5):
        res = train(SPEC, TrainConfig(epochs=epochs, batch_size=batch, scheduler="onecycle", max_lr=0.1,
                                      pct_start=pct, threads=1), split, quiet=True)
        assert len(res.history) == epochs


@pytest.mark.slow  # the engine's process pools really run
def test_bench_compare_picks_the_conventional_best_and_reports_the_spread(tiny_root, monkeypatch):
    from search import bench
    speeds = {(1, 0): 300.0, (1, 2): 500.0, (2, 0): 450.0}
    monkeypatch.setattr(bench, "CONVENTIONAL_SETTINGS", list(speeds))
    monkeypatch.setattr(bench, "conventional", lambda root, steps, t, w: speeds[(t, w)])
    best, setting, tried = bench.best_conventional(tiny_root, 1)
    assert best == 500.0 and setting == {"threads": 1, "workers": 2} and len(tried) == 3
    out = bench.run_compare(tiny_root, steps=1, repeats=2, as_json=True)  # the engine really runs
    assert [r["conventional_best_img_s"] for r in out["repeats"]] == [500.0, 500.0]
    for precision in ("fp32", "bf16"):  # the engine in each precision, against the same conventional best
        ratios = [r["engine_processes_img_s"][precision] / 500.0 for r in out["repeats"]]
        assert all(r > 0 for r in ratios) and [r["ratio"][precision] for r in out["repeats"]] == ratios
        got = out["ratio"][precision]
        assert got["min"] == min(ratios) and got["spread"] == max(ratios) / min(ratios) - 1
        trial = out["default_space_trial"][precision]
        assert trial["model"] == "model6" and trial["precision"] == precision and trial["trial_15_epochs_s"] > 0


def test_study_scale_builds_real_looking_studies_and_times_their_readers(cli, tmp_path):
    import optuna
    from storage.scale import build
    url = f"sqlite:///{tmp_path}/s.db"
    build(url, 16)
    study = optuna.load_study(study_name="scale", storage=url)
    assert len(study.trials) == 16 and {t.state.name for t in study.trials} == {"COMPLETE", "PRUNED"}
    assert all(len(t.user_attrs["epochs"]) == len(t.intermediate_values) for t in study.trials)
    from optuna_dashboard._note import get_note_from_system_attrs
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert all("Receptive field" in get_note_from_system_attrs(attrs, t._trial_id)["body"] for t in study.trials)
    r = cli("bench", "--study-scale", "6", "--json", cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["study_scale"][0]
    assert row["trials"] == 6 and row["report_s"] > 0 and row["dashboard_api_s"] > 0
    # the page is timed twice (as stored, and a copy without intermediate values) or not at all
    page, bare = row["dashboard_page_s"], row["dashboard_page_without_intermediate_values_s"]
    assert (page is None) == (bare is None) and (page is None or (page > 0 and bare > 0))
    bad = cli("bench", "--study-scale", "2k", check=False, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --study-scale")


def test_a_stop_signal_during_a_storage_write_lets_the_write_finish_then_stops_at_the_next_batch(tiny_root, tmp_path):
    """Ctrl-C/SIGTERM must never cut a database write in half (CI saw a SIGTERM leave a SQLite lock
    held): the signal only asks; train() stops at the next batch, after the write committed."""
    import os
    import signal
    import sqlite3
    import time
    from search import stopping
    split = make_split(load_mnist(tiny_root, download=False))
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    db.execute("create table epochs (n integer)")

    def on_epoch(rec):  # the objective writes its epoch to the study here
        db.execute("begin immediate")
        db.execute("insert into epochs values (?)", (rec["epoch"],))
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-transaction
        time.sleep(0.2)
        db.execute("insert into epochs values (?)", (-rec["epoch"],))
        db.execute("commit")

    stopping.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(SPEC, TrainConfig(epochs=3, batch_size=16, seed=1, threads=1), split, on_epoch=on_epoch, quiet=True)
        assert stopping.requested()
    finally:
        stopping.reset()
    assert [r[0] for r in db.execute("select n from epochs")] == [1, -1]  # epoch 1 whole, nothing after
    assert not db.in_transaction


def test_weight_averaging_scores_and_hands_back_the_averaged_weights(tiny_root):
    """ema > 0: every epoch is scored with the exponential moving average of the weights, and the
    returned model is that average; the same seed repeats it; ema = 0 is the plain run."""
    from space.model import evaluate
    split = make_split(load_mnist(tiny_root, download=False))
    cfg = dict(epochs=3, batch_size=16, seed=5, threads=1, rotation=7)
    plain = train(SPEC, TrainConfig(**cfg), split, quiet=True)
    runs = [train(SPEC, TrainConfig(**cfg, ema=0.9), split, quiet=True) for _ in range(2)]
    a, b = runs
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    # the training itself is the plain run's (same losses); only what is scored and returned differs
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in plain.history]
    assert any(not torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), plain.model.state_dict().values()))
    assert list(a.model.state_dict()) == list(plain.model.state_dict())  # a plain Sequential: exports as before
    loss, acc, _ = evaluate(a.model, split.eval_images, split.eval_labels)
    assert acc == a.history[-1]["val_acc"] and loss == pytest.approx(a.history[-1]["val_loss"])


def test_the_weight_average_warms_up_then_holds_its_decay():
    """Update t moves the average by 1 - min(ema, (1 + t) / (10 + t)) towards the live weights,
    checked against the formula written out by hand, through AveragedModel as train() uses it."""
    from search.train import _ema_update, ema_decay
    assert ema_decay(0, 0.999) == pytest.approx(0.1) and ema_decay(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay(890, 0.999) == pytest.approx(0.99) and ema_decay(20_000, 0.999) == 0.999
    live = torch.nn.Linear(3, 2)
    decay_now = {"decay": 0.0}
    avg = torch.optim.swa_utils.AveragedModel(live, multi_avg_fn=_ema_update(decay_now), use_buffers=True)
    want = None
    for t in range(30):
        with torch.no_grad():
            live.weight.add_(torch.randn(2, 3))
        decay_now["decay"] = ema_decay(t, 0.5)
        avg.update_parameters(live)
        w = live.weight.detach().clone()
        d = ema_decay(t, 0.5)
        want = w if want is None else d * want + (1 - d) * w  # the first update copies
        assert torch.allclose(avg.module.weight, want, atol=1e-6), t
    assert ema_decay(29, 0.5) == 0.5  # the late updates ran at the full decay


def test_separable_specs_train_channels_last_and_come_back_in_the_default_layout(tiny_root, monkeypatch):
    """A spec with grouped convolutions trains channels_last on the CPU (faster there: see
    training_memory_format); the model handed back is contiguous, the run repeats per seed, and one
    step computes the same outputs and gradients in either layout."""
    import search.train as train_mod
    from space.spec import ArchSpec, Layer
    sep = ArchSpec(name="sep", order="bn-relu", layers=(
        Layer("conv", out=6, padding=1), Layer("conv", out=6, groups=6, padding=1), Layer("conv", out=8, kernel=1),
        Layer("maxpool"), Layer("conv", out=8, groups=8), Layer("conv", out=12, kernel=1),
        Layer("gap"), Layer("head", out=10, kernel=1)))
    cpu = torch.device("cpu")
    assert train_mod.training_memory_format(sep, cpu) == torch.channels_last
    assert train_mod.training_memory_format(SPEC, cpu) == torch.contiguous_format
    assert train_mod.training_memory_format(sep, torch.device("cuda")) == torch.contiguous_format
    split = make_split(load_mnist(tiny_root, download=False))
    cfg = TrainConfig(epochs=2, batch_size=16, seed=2, threads=1, rotation=5, ema=0.9)
    seen = []
    real_build = train_mod.build_model
    def spy_build(*a, **kw):
        m = real_build(*a, **kw)
        seen.append(m)
        return m
    monkeypatch.setattr(train_mod, "build_model", spy_build)
    a, b = train(sep, cfg, split, quiet=True), train(sep, cfg, split, quiet=True)
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    # the returned weights are in the default layout, whatever layout training used
    assert all(p.is_contiguous() for p in a.model.parameters())
    # the layout changes how, not what, is computed: one step's outputs and gradients agree
    torch.manual_seed(0)
    m1 = real_build(sep)
    m2 = real_build(sep).to(memory_format=torch.channels_last)
    m2.load_state_dict(m1.state_dict())
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    outs = []
    for m, xin in ((m1, x), (m2, x.contiguous(memory_format=torch.channels_last))):
        out = m(xin)
        torch.nn.functional.cross_entropy(out, y).backward()
        outs.append((out.detach(), [p.grad for p in m.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert all(torch.allclose(g1, g2, atol=1e-5) for g1, g2 in zip(outs[0][1], outs[1][1]))
    # and the layout really was channels_last while it trained (a 4-d weight with C > 1 shows it)
    depthwise_or_1x1 = [m for m in seen[0].modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert depthwise_or_1x1 and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in depthwise_or_1x1)


def test_bf16_trains_its_forward_pass_in_bfloat16_and_keeps_weights_and_scoring_in_float32(tiny_root, monkeypatch):
    """precision "bf16": convolutions see bfloat16 while training, never while scoring; the
    weights (and the weight average) stay float32; a run repeats per seed and differs from fp32's."""
    import search.train as train_mod
    split = make_split(load_mnist(tiny_root, download=False))
    cfg = TrainConfig(epochs=2, batch_size=16, seed=2, threads=1, ema=0.9, precision="bf16")
    seen = []  # (training?, the first convolution's output dtype) per forward pass
    real_build = train_mod.build_model
    def spy_build(*a, **kw):
        m = real_build(*a, **kw)
        m[0].register_forward_hook(lambda mod, inp, out: seen.append((mod.training, out.dtype)))
        return m
    monkeypatch.setattr(train_mod, "build_model", spy_build)
    a, b = train(SPEC, cfg, split, quiet=True), train(SPEC, cfg, split, quiet=True)
    assert {dt for training, dt in seen if training} == {torch.bfloat16}
    assert {dt for training, dt in seen if not training} == {torch.float32}  # scoring (the averaged copy)
    assert all(p.dtype == torch.float32 for p in a.model.parameters())
    assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    fp32 = train(SPEC, dataclasses.replace(cfg, precision="fp32"), split, quiet=True)
    assert fp32.history[-1]["train_loss"] != a.history[-1]["train_loss"]
    assert a.config.to_dict()["precision"] == "bf16"  # what a model file's metadata records


def test_a_space_file_can_fix_the_precision_and_refuses_an_unknown_one():
    import optuna
    from space.searchspace import SearchSpace, SpaceError
    space = SearchSpace.from_dict({"recipe": {"precision": "bf16"}})
    _, recipe = space.sample(optuna.create_study().ask())
    assert recipe.precision == "bf16"
    assert "precision" not in SearchSpace.default().to_dict()["recipe"]  # stored spaces stay as they were
    with pytest.raises(SpaceError, match="precision"):
        SearchSpace.from_dict({"recipe": {"precision": "fp16"}})
