import json
import random

import pytest
import torch

from space.baselines import BASELINES
from space.model import build_model
from space.rf import receptive_field, format_rf_table
from space.spec import ArchSpec, Layer, BudgetError, SpecError, count_params, check_budget


def random_spec(rng: random.Random) -> ArchSpec:
    """A random valid spec: blocks of 3x3/1x1 convs (some depthwise or grouped) with max-pools
    between, GAP, 1x1 head."""
    layers, n, cin = [], 28, 1
    for block in range(rng.randint(1, 3)):
        for _ in range(rng.randint(1, 3)):
            k = rng.choice([1, 3, 3])
            pad = rng.choice([0, 1]) if k == 3 else 0
            if n + 2 * pad - k + 1 < 2:
                continue
            out, groups = rng.randint(1, 40), 1
            if cin > 1 and rng.random() < 0.3:  # depthwise (out = in = groups) or 2 groups
                groups = cin if k == 3 or cin % 2 else 2
                out = cin if groups == cin else 2 * rng.randint(1, 20)
            layers.append(Layer("conv", out, kernel=k, padding=pad, groups=groups, linear=rng.random() < 0.15))
            n, cin = n + 2 * pad - k + 1, out
        if block < 2 and n >= 4:
            layers.append(Layer("maxpool"))
            n //= 2
    if not layers or layers[-1].op != "conv":
        layers.append(Layer("conv", rng.randint(1, 40), kernel=1))
    layers += [Layer("gap"), Layer("head", 10, kernel=1)]
    return ArchSpec(tuple(layers), batchnorm=rng.random() < 0.7, bias=rng.random() < 0.3)


def test_param_count_equals_built_module_for_many_random_specs():
    rng = random.Random(0)
    for _ in range(200):
        spec = random_spec(rng)
        model = build_model(spec, dropout=rng.choice([0.0, 0.1]))
        assert count_params(spec) == sum(p.numel() for p in model.parameters()), spec
        out = model(torch.zeros(2, 1, 28, 28))
        assert out.shape == (2, 10)


def test_baseline_counts_match_the_seed():
    counts = {n: count_params(b.spec) for n, b in BASELINES.items()}
    assert counts["model2"] == 7272
    assert counts["model3"] == counts["model4"] == counts["model5"] == 7448
    assert counts["model6"] == 7416
    assert 6_000_000 < counts["model1"] < 6_500_000
    for name, b in BASELINES.items():
        assert count_params(b.spec) == sum(p.numel() for p in build_model(b.spec).parameters())


def test_spec_round_trips_through_json():
    rng = random.Random(1)
    specs = [b.spec for b in BASELINES.values()] + [random_spec(rng) for _ in range(50)]
    for spec in specs:
        text = spec.to_json()
        json.loads(text)  # plain JSON
        back = ArchSpec.from_json(text)
        assert back == spec and back.description == spec.description
        assert count_params(back) == count_params(spec)


def test_budget_refusal_names_count_and_limit():
    spec = BASELINES["model1"].spec
    with pytest.raises(BudgetError) as e:
        check_budget(spec, 8000)
    assert "6,379,786" in str(e.value) and "8,000" in str(e.value)
    assert check_budget(BASELINES["model6"].spec, 8000) == 7416
    with pytest.raises(BudgetError):
        check_budget(BASELINES["model6"].spec, 7416)  # "fewer than": equal is refused


def test_model6_receptive_field_table_matches_the_seed():
    rows = receptive_field(BASELINES["model6"].spec)
    assert [r.layer for r in rows] == ["conv1", "conv2", "conv3", "maxpool", "conv4", "conv5",
                                       "conv6", "conv7", "avgpool", "conv8"]
    assert [r.R_out for r in rows] == [3, 5, 5, 6, 10, 14, 18, 22, 28, 28]
    assert [r.N_out for r in rows] == [26, 24, 24, 12, 10, 8, 6, 4, 1, 1]
    assert [r.J_out for r in rows] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert rows[8].kernel == 4 and rows[8].stride == 1
    table = format_rf_table(BASELINES["model6"].spec)
    assert table.splitlines()[0].split("|")[1].strip() == "layer"
    assert len(table.splitlines()) == 2 + 1 + 10


@pytest.mark.parametrize("bad, msg", [
    ({"layers": [{"op": "conv", "out": 8}, {"op": "gap"}]}, "head"),
    ({"layers": [{"op": "conv", "out": 8, "kernel": 5}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]}, "kernel"),
    ({"layers": [{"op": "conv", "out": 8}, {"op": "head", "out": 10, "kernel": 1}]}, "1x1"),
    ({"layers": [{"op": "gap"}, {"op": "head", "out": 7, "kernel": 1}]}, "classes"),
    ({"layers": [{"op": "dense", "out": 8}]}, "op must be"),
    ({"layers": [], "colour": 1}, "unknown"),
    ({"layers": [{"op": "conv", "out": 8}, {"op": "conv", "out": 12, "groups": 8}, {"op": "gap"},
                 {"op": "head", "out": 10, "kernel": 1}]}, "groups must divide"),
    ({"layers": [{"op": "conv", "out": 8, "groups": 0}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]},
     "groups must divide"),
    ({"layers": [{"op": "conv", "out": 8}, {"op": "maxpool", "groups": 2}, {"op": "gap"},
                 {"op": "head", "out": 10, "kernel": 1}]}, "conv, fconv and head layers only"),
    ({"layers": [{"op": "conv", "out": 8, "groups": "2"}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]},
     "integers"),
    ({"layers": [{"op": "conv", "out": 8, "linear": 1}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]},
     "linear must be true or false"),
    ({"layers": [{"op": "conv", "out": 8}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1, "linear": True}]},
     "linear belongs to conv and fconv layers only"),
    ({"layers": [{"op": "conv", "out": 8}, {"op": "maxpool", "linear": True}, {"op": "gap"},
                 {"op": "head", "out": 10, "kernel": 1}]}, "linear belongs to conv and fconv layers only"),
])
def test_invalid_specs_are_refused_with_a_reason(bad, msg):
    with pytest.raises(SpecError, match=msg):
        ArchSpec.from_dict(bad)


def test_depthwise_separable_pair_counts_and_builds_as_pytorch_does():
    """A 3x3 depthwise conv (groups = channels) then a 1x1: 9*C + C*C' weights (+ BN), not 9*C*C'."""
    spec = ArchSpec.from_dict({"layers": [
        {"op": "conv", "out": 8, "padding": 1},                    # 72 + 16 (BN)
        {"op": "conv", "out": 8, "padding": 1, "groups": 8},       # 72 + 16
        {"op": "conv", "out": 16, "kernel": 1},                    # 128 + 32
        {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]})   # 160
    assert count_params(spec) == 88 + 88 + 160 + 160
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)
    assert model[3].groups == 8 and model[3].weight.shape == (8, 1, 3, 3)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # groups is written only when used: older spec files (and the shipped models') read back identical
    assert "groups" not in BASELINES["model6"].spec.to_json()
    assert ArchSpec.from_json(spec.to_json()) == spec and '"groups": 8' in spec.to_json()


def test_not_json_is_a_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{nope")


def test_pooled_dropout_drops_at_rate_p_rescales_and_is_identity_in_eval():
    from space.model import PooledDropout
    torch.manual_seed(0)
    d = PooledDropout(0.1)
    x = torch.ones(64, 8, 12, 12)
    kept = []
    for _ in range(50):
        y = d(x)
        assert torch.isclose(y, torch.zeros(())).logical_or(torch.isclose(y, torch.tensor(1 / 0.9))).all()
        kept.append((y > 0).float().mean().item())
    assert abs(sum(kept) / len(kept) - 0.9) < 0.01
    # masks differ from call to call and from image to image
    a, b = d(x), d(x)
    assert not torch.equal(a, b) and not torch.equal(a[0], a[1])
    d.eval()
    assert torch.equal(d(x), x)
    # seeded: the same sequence of masks
    torch.manual_seed(5); m1 = PooledDropout(0.1)(x)
    torch.manual_seed(5); m2 = PooledDropout(0.1)(x)
    assert torch.equal(m1, m2)


def test_a_separable_model_exports_loads_back_safely_and_its_onnx_agrees(tmp_path):
    """Grouped convolutions pass the whole way out: the .pt2 (through the archive check that
    guards every load) and the ONNX file predict what the module does."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator
    from space.model import Normalised
    from storage.modelfile import load_model_file, save_model_file
    spec = ArchSpec.from_dict({"layers": [
        {"op": "conv", "out": 4, "padding": 1}, {"op": "conv", "out": 4, "padding": 1, "groups": 4},
        {"op": "conv", "out": 8, "kernel": 1}, {"op": "maxpool"}, {"op": "conv", "out": 8, "groups": 8},
        {"op": "conv", "out": 8, "kernel": 1}, {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]})
    torch.manual_seed(0)
    module = Normalised(build_model(spec)).eval()
    for m in module.modules():  # non-trivial BN statistics, so eval mode is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    meta = save_model_file(module, spec, {"note": "test"}, tmp_path / "sep.pt2", tmp_path / "sep.onnx")
    assert meta["spec"]["layers"][1]["groups"] == 4 and meta["params"] == count_params(spec)
    loaded, back = load_model_file(tmp_path / "sep.pt2")
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        want = module(x)
    assert torch.allclose(loaded(x), want, atol=1e-5)
    assert ArchSpec.from_dict(back["spec"]) == spec
    (got,) = ReferenceEvaluator(str(tmp_path / "sep.onnx")).run(None, {"images": x.numpy()})
    assert np.allclose(got, want.numpy(), atol=1e-4)


def test_a_linear_conv_has_no_relu_bn_or_dropout_after_it_and_no_bn_parameters():
    """linear: the depthwise 3x3 of an Xception-style pair feeds the 1x1 directly."""
    layers = [{"op": "conv", "out": 8, "padding": 1},                                  # 72 + 16
              {"op": "conv", "out": 8, "padding": 1, "groups": 8, "linear": True},     # 72, no BN
              {"op": "conv", "out": 16, "kernel": 1},                                  # 128 + 32
              {"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]                   # 160
    spec = ArchSpec.from_dict({"layers": layers, "order": "bn-relu"})
    assert count_params(spec) == 88 + 72 + 160 + 160
    model = build_model(spec, dropout=0.1)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)
    kinds = [type(m).__name__ for m in model]
    # conv, BN, ReLU, dropout | depthwise conv straight into | 1x1, BN, ReLU, dropout | GAP, head
    assert kinds[:9] == ["Conv2d", "BatchNorm2d", "ReLU", "PooledDropout", "Conv2d", "Conv2d", "BatchNorm2d",
                         "ReLU", "PooledDropout"], kinds
    # written only when true: every older spec (and the shipped models') reads back identical
    assert '"linear": true' in spec.to_json() and ArchSpec.from_json(spec.to_json()) == spec
    plain = ArchSpec.from_dict({"layers": [{k: v for k, v in l.items() if k != "linear"} for l in layers]})
    assert "linear" not in plain.to_json() and count_params(plain) == count_params(spec) + 16


# The ops registry (space.ops): one row per op serves checks, counts, sizes, RF and building ----------

def _spec(*layers):
    from space.spec import ArchSpec
    return ArchSpec(layers=tuple(layers), name="t")


@pytest.mark.parametrize("spec", [
    # factorized 3x3 (3x1 then 1x3) in both paddings, and a strided 3x3 in place of each max-pool
    _spec(Layer("conv", out=8, padding=1), Layer("fconv", out=12, padding=1), Layer("maxpool"),
          Layer("fconv", out=16), Layer("fconv", out=16), Layer("gap"), Layer("head", out=10, kernel=1)),
    _spec(Layer("conv", out=8, padding=1), Layer("sconv", out=12, padding=1), Layer("conv", out=16, padding=1),
          Layer("sconv", out=16, padding=1), Layer("conv", out=16), Layer("gap"), Layer("head", out=10, kernel=1)),
    _spec(Layer("conv", out=6), Layer("sconv", out=8), Layer("fconv", out=8), Layer("sconv", out=12),
          Layer("gap"), Layer("head", out=10, kernel=1)),
    # a linear factorized depthwise 3x3 (3x1 then 1x3, groups = channels) before each 1x1
    _spec(Layer("conv", out=8, padding=1), Layer("fconv", out=8, padding=1, groups=8, linear=True),
          Layer("conv", out=12, kernel=1), Layer("maxpool"), Layer("fconv", out=12, groups=12, linear=True),
          Layer("conv", out=16, kernel=1), Layer("gap"), Layer("head", out=10, kernel=1)),
], ids=["fconv", "sconv-pad1", "sconv-fconv-pad0", "fconv-depthwise"])
def test_new_ops_count_size_and_build_as_the_registry_says(spec):
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec)
    x = torch.zeros(2, 1, 28, 28)
    sizes = []
    for layer_mods, layer in zip(_split(model, spec), spec.layers):
        for m in layer_mods:
            x = m(x)
        sizes.append(x.shape[-1] if x.dim() == 4 else 1)
    assert sizes == spec.spatial_sizes()
    assert x.shape == (2, 10)
    rf = receptive_field(spec)
    assert [r.N_out for r in rf] == spec.spatial_sizes()


def _split(model, spec):
    """The built modules grouped per spec layer (each op knows how many modules it makes)."""
    from space.ops import OPS
    mods, out, cin = list(model), [], spec.in_channels
    for l in spec.layers:
        n = len(OPS[l.op].build(l, cin=cin, bias=spec.bias, batchnorm=spec.batchnorm, order=spec.order,
                                dropout=0.0, make_dropout=None))
        out.append(mods[:n])
        mods = mods[n:]
        cin = l.out if OPS[l.op].convolves else cin
    return out


def test_strided_conv_steps_the_receptive_field_like_a_pool():
    spec = _spec(Layer("conv", out=8, padding=1), Layer("sconv", out=8, padding=1), Layer("gap"),
                 Layer("head", out=10, kernel=1))
    rows = receptive_field(spec)
    assert (rows[1].stride, rows[1].J_out, rows[1].R_out, rows[1].N_out) == (2, 2, 5, 14)


def test_new_ops_refuse_what_they_cannot_be():
    for bad, says in ((Layer("fconv", out=8, kernel=1), "kernel must be 3"),
                      (Layer("sconv", out=8, groups=2), "groups belongs to conv, fconv and head"),
                      (Layer("sconv", out=8, linear=True), "linear belongs to conv and fconv"),
                      (Layer("fconv", out=12, groups=3), "groups must divide")):
        with pytest.raises(SpecError, match=says):
            _spec(Layer("conv", out=8), bad, Layer("gap"), Layer("head", out=10, kernel=1))


def test_a_spec_with_new_ops_round_trips_through_json():
    spec = _spec(Layer("conv", out=8, padding=1), Layer("sconv", out=12, padding=1), Layer("fconv", out=12),
                 Layer("gap"), Layer("head", out=10, kernel=1))
    assert ArchSpec.from_json(spec.to_json()) == spec


def test_a_note_describes_new_ops_by_their_registry_words():
    from storage.notes import describe_arch
    spec = _spec(Layer("conv", out=8, padding=1), Layer("sconv", out=12, padding=1), Layer("fconv", out=12),
                 Layer("maxpool"), Layer("fconv", out=16), Layer("gap"), Layer("head", out=10, kernel=1))
    text = describe_arch(spec)
    assert "[8 12/2, pad 1] → [12f, pad 0] → max-pool → [16f, pad 0]" in text
    assert text.count("factorized, a 3x1 then a 1x3") == 1 and text.count("stride 2, in place of a max-pool") == 1


def test_a_factorized_depthwise_counts_six_weights_a_channel_and_reads_as_its_pair():
    from storage.notes import describe_arch
    dw = Layer("fconv", out=12, padding=1, groups=12, linear=True)
    spec = _spec(Layer("conv", out=12, padding=1), dw, Layer("conv", out=16, kernel=1), Layer("gap"),
                 Layer("head", out=10, kernel=1))
    plain = _spec(Layer("conv", out=12, padding=1), Layer("conv", out=12, padding=1, groups=12, linear=True),
                  Layer("conv", out=16, kernel=1), Layer("gap"), Layer("head", out=10, kernel=1))
    assert count_params(plain) - count_params(spec) == 3 * 12  # 9*C against 6*C; linear: no BN either way
    model = build_model(spec)
    assert [m.groups for m in model if isinstance(m, torch.nn.Conv2d)][1:3] == [12, 12]
    assert "[12 16f, pad 1]" in describe_arch(spec)
    assert ArchSpec.from_json(spec.to_json()) == spec


def test_a_silu_spec_builds_silu_units_counts_the_same_and_exports(tmp_path):
    from space.model import Normalised
    from storage.modelfile import load_model_file, save_model_file
    from storage.notes import describe_arch
    layers = (Layer("conv", out=8, padding=1), Layer("conv", out=8, padding=1, groups=8, linear=True),
              Layer("conv", out=12, kernel=1), Layer("maxpool"), Layer("conv", out=12), Layer("gap"),
              Layer("head", out=10, kernel=1))
    relu, silu = ArchSpec(layers=layers, name="r"), ArchSpec(layers=layers, name="s", activation="silu")
    assert count_params(silu) == count_params(relu)  # an activation has no parameters
    kinds = lambda spec: [type(m).__name__ for m in build_model(spec) if type(m).__name__ in ("ReLU", "SiLU")]
    assert kinds(relu) == ["ReLU"] * 3 and kinds(silu) == ["SiLU"] * 3  # the linear depthwise has none
    assert "Conv-ReLU-BN" in describe_arch(relu) and "Conv-SiLU-BN" in describe_arch(silu)
    # a ReLU spec's JSON is what it was before the field existed; a SiLU one says so and reads back
    assert "activation" not in relu.to_dict() and silu.to_dict()["activation"] == "silu"
    assert ArchSpec.from_json(silu.to_json()) == silu != ArchSpec.from_json(relu.to_json())
    for bad in ("tanh", 1, None):
        with pytest.raises(SpecError, match="bad value for 'activation'"):
            ArchSpec.from_dict({**silu.to_dict(), "activation": bad})
    # the model file and its ONNX twin carry it: plain PyTorch runs the SiLU
    model = Normalised(build_model(silu)).eval()
    meta = save_model_file(model, silu, {}, tmp_path / "s.pt2", onnx_path=tmp_path / "s.onnx")
    loaded, stored = load_model_file(tmp_path / "s.pt2")
    x = torch.rand(3, 1, 28, 28)
    assert stored["spec"]["activation"] == "silu" == meta["spec"]["activation"]
    assert torch.allclose(loaded(x), model(x), atol=1e-6) and (tmp_path / "s.onnx").stat().st_size > 0
