"""The search space as data: sampling, budget-awareness, the model6 point, smallest(), JSON."""
import json
import warnings

import optuna
import pytest

from space.baselines import BASELINES
from space.recipe import TrainConfig
from space.searchspace import (MODEL6_POINT, RECIPE_FIELDS, Choice, FloatRange, Fixed, IntRange, SearchSpace,
                               SpaceError, space_diff)
from space.spec import count_params
from space.target import MAX_PARAMS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def random_draws(space: SearchSpace, n: int, max_params: int | None, seed: int = 0):
    """n draws through real Optuna trials (RandomSampler), as a study would make them."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        spec, recipe = space.sample(trial, max_params=max_params)
        out.append((spec, recipe, trial.params))
        study.tell(trial, 0.0)
    return out


@pytest.fixture(scope="module")
def draws():
    return random_draws(SearchSpace.default(), 400, MAX_PARAMS)


def test_hundreds_of_random_draws_are_valid_fit_the_budget_and_cover_the_space(draws):
    counts = [count_params(spec) for spec, _, _ in draws]
    fit = sum(c < MAX_PARAMS for c in counts) / len(counts)
    assert fit >= 0.95, fit
    blocks = {sum(l.op in ("maxpool", "sconv") for l in spec.layers) + 1 for spec, _, _ in draws}
    paddings = {l.padding for spec, _, _ in draws for l in spec.layers if l.kernel == 3 and l.op != "head"}
    orders = {spec.order for spec, _, _ in draws}
    schedulers = {recipe.scheduler for _, recipe, _ in draws}
    squeezes = {any(params.get(f"b{b}_squeeze") for b in (1, 2)) for _, _, params in draws}
    ops = {l.op for spec, _, _ in draws for l in spec.layers}
    assert blocks == {2, 3} and paddings == {0, 1} and orders == {"relu-bn", "bn-relu"}
    assert schedulers == {"step", "onecycle"} and squeezes == {False, True}
    # the default space draws every family that produced a shipped model, and the new ops
    assert {"conv", "fconv", "sconv", "maxpool"} <= ops
    assert any(l.groups > 1 and l.linear for spec, _, _ in draws for l in spec.layers)  # linear depthwise
    assert {recipe.ema for _, recipe, _ in draws} == {0.0, 0.999}
    for spec, recipe, params in draws:  # the recipe's conditional settings follow the scheduler
        assert ("step_size" in params) == (recipe.scheduler == "step") == ("gamma" in params)
        assert ("max_lr" in params) == (recipe.scheduler == "onecycle") == ("pct_start" in params)
        assert ("lr" in params) == (recipe.scheduler != "onecycle")
        assert recipe.batch_size in (32, 64, 128)


def test_budget_aware_widths_fit_a_small_budget_too():
    draws = random_draws(SearchSpace.default(), 200, 3000, seed=1)
    counts = [count_params(spec) for spec, _, _ in draws]
    assert sum(c < 3000 for c in counts) / len(counts) >= 0.95
    assert max(counts) < 3000


def test_without_the_cap_many_draws_would_be_refused():
    """The cap is what makes the draws fit: the same space uncapped overshoots a small budget often."""
    draws = random_draws(SearchSpace.default(), 200, None, seed=1)
    assert sum(count_params(spec) >= 3000 for spec, _, _ in draws) > 40


def test_model6_is_a_point_of_the_default_space_and_samples_back_exactly():
    space = SearchSpace.default()
    assert space.outside(MODEL6_POINT) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FixedTrial warns about any value outside a distribution
        spec, recipe = space.sample(optuna.trial.FixedTrial(MODEL6_POINT), max_params=MAX_PARAMS)
    model6 = BASELINES["model6"].spec
    assert spec.layers == model6.layers and spec.batchnorm and spec.order == model6.order
    assert count_params(spec) == 7416
    default = TrainConfig()
    for name in RECIPE_FIELDS:
        assert getattr(recipe, name) == getattr(default, name), name


def test_outside_names_what_is_not_in_the_space():
    bad = dict(MODEL6_POINT, b1_w0=99, batch_size=48, extra=1)
    problems = " | ".join(SearchSpace.default().outside(bad))
    assert "b1_w0: 99" in problems and "batch_size: 48" in problems and "extra: not a parameter" in problems
    # a value outside is noted and never built from: a count of 10**19 convolutions was a list of
    # 10**19 layers (OverflowError), and a boolean was read as the integer 1 (found by a review)
    huge = SearchSpace.default().outside(dict(MODEL6_POINT, b1_convs=10 ** 19, b2_w0=10 ** 9))
    assert any(p.startswith("b1_convs: 10000000000000000000 is outside") for p in huge), huge
    assert any(p.startswith("b2_w0: 1000000000 is outside") for p in huge), huge
    assert "blocks: True is outside 2..3" in SearchSpace.default().outside(dict(MODEL6_POINT, blocks=True))


def test_smallest_is_minimal(draws):
    space = SearchSpace.default()
    smallest = count_params(space.smallest())
    assert smallest <= min(count_params(spec) for spec, _, _ in draws)
    # and it is what the ranges say: 2 blocks, 1 conv of width 4 each, no squeeze, head 4 -> 10; the
    # second block's conv a linear-depthwise separable pair (the default space draws that family)
    assert smallest == (9 * 1 * 4 + 8) + (9 * 4 + 4 * 4 + 8) + 4 * 10
    narrow = SearchSpace(blocks=Fixed(3), convs=IntRange(2, 3), widths=(IntRange(5, 9),) * 3, squeeze=Fixed(True))
    s = narrow.smallest()
    assert sum(l.op == "maxpool" for l in s.layers) == 2 and count_params(s) <= min(
        count_params(spec) for spec, _, _ in random_draws(narrow, 50, None))


def test_space_round_trips_through_json():
    space = SearchSpace.default()
    assert SearchSpace.from_json(space.to_json()) == space
    edited = json.loads(space.to_json())
    edited["arch"]["widths"][2] = {"int": [6, 12], "step": 2}
    edited["recipe"]["label_smoothing"] = {"float": [0.0, 0.1]}
    edited["recipe"]["batch_size"] = 64
    other = SearchSpace.from_dict(edited)
    assert other != space and SearchSpace.from_json(other.to_json()) == other
    assert other.to_dict() == edited
    diff = space_diff(space.to_dict(), other.to_dict())
    assert any(d.startswith("arch.widths[2]") for d in diff) and any(d.startswith("recipe.batch_size") for d in diff)


def test_weight_averaging_is_a_recipe_dimension_a_space_may_draw_and_old_spaces_lack():
    import optuna
    space = SearchSpace.from_dict({"recipe": {"ema": {"choice": [0.0, 0.999]}}})
    drawn = {space.sample(optuna.trial.FixedTrial({**MODEL6_POINT, "ema": e}))[1].ema for e in (0.0, 0.999)}
    assert drawn == {0.0, 0.999}
    # the default space draws it now; a stored space from before the setting existed reads as no
    # average, as its trials trained: studies resume unchanged
    assert SearchSpace.default().recipe["ema"] == Choice((0.0, 0.999))
    old = SearchSpace.default().to_dict()
    del old["recipe"]["ema"]
    assert SearchSpace.from_dict(old).recipe["ema"] == Fixed(0.0)


def test_separable_draws_are_depthwise_pairs_fit_the_budget_and_old_spaces_lack_them():
    space = SearchSpace.from_dict({"arch": {"separable": {"choice": [False, True]}}})
    draws = random_draws(space, 200, 4000, seed=2)
    assert max(count_params(spec) for spec, _, _ in draws) < 4000  # _count agrees with count_params
    by_choice = {True: [], False: []}
    for spec, _, params in draws:
        by_choice[params["separable"]].append(spec)
    assert len(by_choice[True]) > 50 and len(by_choice[False]) > 50
    for spec in by_choice[False]:
        assert all(l.groups == 1 for l in spec.layers)
    for spec in by_choice[True]:
        convs = [l for l in spec.layers if l.op == "conv"]
        assert convs[0].groups == 1 and convs[0].kernel == 3  # the first sees one channel: plain
        cin = convs[0].out
        for l in convs[1:]:
            if l.kernel == 3:  # every later 3x3 is depthwise and followed by a 1x1
                assert l.groups == l.out == cin
            cin = l.out
        threes = [i for i, l in enumerate(spec.layers) if l.op == "conv" and l.kernel == 3 and l.groups > 1]
        assert all(spec.layers[i + 1].op == "conv" and spec.layers[i + 1].kernel == 1 for i in threes)
    # the smallest model of such a space is separable, and no draw is below it
    assert count_params(space.smallest()) <= min(count_params(spec) for spec, _, _ in draws)
    assert count_params(space.smallest()) < count_params(SearchSpace.from_dict({"arch": {"separable": False}}).smallest())
    # a stored space from before the setting existed reads as separable off: studies resume unchanged
    old = SearchSpace.default().to_dict()
    del old["arch"]["separable"]
    assert SearchSpace.from_dict(old).separable == Fixed(False)


def test_every_kind_of_draw_is_built_under_its_budget_and_counted_by_the_ops_registry():
    """The width caps count with count_params (space.ops' arithmetic), so every draw of every
    family fits the budget it was drawn under: separable (linear or not), factorized, strided
    hand-overs, squeezes, biases, 2-3 blocks. The built module has exactly the counted weights."""
    space = SearchSpace.from_dict({"arch": {"separable": {"choice": [False, True]},
                                            "linear_depthwise": {"choice": [False, True]},
                                            "factorized": {"choice": [False, True]},
                                            "downsample": {"choice": ["maxpool", "stride"]},
                                            "bias": {"choice": [False, True]}, "convs": {"int": [1, 3]},
                                            "widths": [{"int": [2, 16]}, {"int": [2, 24]}, {"int": [2, 24]}],
                                            "squeeze_width": {"int": [2, 16]}}})
    seen = set()
    from space.model import build_model
    for spec, _, params in random_draws(space, 300, 3600, seed=5):
        built = sum(p.numel() for p in build_model(spec).parameters())
        assert built == count_params(spec)
        ops = {l.op for l in spec.layers}
        kind = ("sep" if params["separable"] else "fac" if params.get("factorized") else "plain",
                params.get("downsample", "maxpool"), params["bias"])
        if count_params(spec) >= 3600:  # over only where even the narrowest widths do not fit
            assert all(params[p] == 2 for p in params if "_w" in p)
        assert ("fconv" in ops) == (kind[0] == "fac")  # every 3x3 after the first is factorized
        assert ("sconv" in ops) == (params.get("downsample") == "stride" and params["blocks"] > 1)
        assert ("maxpool" in ops) == (params.get("downsample", "maxpool") == "maxpool" and params["blocks"] > 1)
        seen.add(kind)
    assert len(seen) == 12  # every family x hand-over x bias was drawn and checked


def test_separable_spaces_need_widths_of_two_or_more():
    """A 1-wide layer makes the separable pair larger than the plain conv, and the count stop
    growing with width: refused up front rather than breaking the budget caps."""
    for arch in ({"widths": [{"int": [1, 8]}, {"int": [4, 8]}, {"int": [4, 8]}]}, {"squeeze_width": {"int": [1, 8]}}):
        with pytest.raises(SpaceError, match="2 or more when arch.separable"):
            SearchSpace.from_dict({"arch": {"separable": True, **arch}})
        SearchSpace.from_dict({"arch": arch})  # without separable a width of 1 stays allowed


def test_a_separable_draw_is_described_as_its_widths():
    from storage.notes import describe_arch
    space = SearchSpace.from_dict({"arch": {"separable": True}})
    point = {**MODEL6_POINT, "separable": True}
    spec, _ = space.sample(optuna.trial.FixedTrial(point))
    text = describe_arch(spec)
    # model6's widths, not the depthwise layers' (which repeat the previous width), and its squeeze
    assert "[8 15, pad 0, 1x1 squeeze to 10] → max-pool → [10 12 14 18, pad 0]" in text, text
    assert "depthwise-separable" in text
    assert "depthwise" not in describe_arch(BASELINES["model6"].spec)


def test_a_partial_space_file_takes_the_defaults_for_the_rest():
    space = SearchSpace.from_dict({"arch": {"blocks": 3}})
    assert space.blocks == Fixed(3)
    # ... except the dimensions added after older files were written, which such a file leaves off
    assert space.recipe == {**SearchSpace.default().recipe, "ema": Fixed(0.0)}
    assert (space.separable, space.factorized, space.downsample) == (Fixed(False), Fixed(False), Fixed("maxpool"))


@pytest.mark.parametrize("doc, needle", [
    ({"arch": {"depth": 3}}, "unknown settings depth"),
    ({"recipe": {"momentun": 0.9}}, "unknown settings momentun"),
    ({"arch": {"blocks": {"int": [3, 2]}}}, "bad int range"),
    ({"arch": {"blocks": {"int": [2, 5]}}}, "arch.widths has 3"),
    ({"arch": {"blocks": {"int": [2, 3.5]}}}, "needs integers"),
    ({"arch": {"widths": [{"int": [0, 4]}, {"int": [4, 8]}, {"int": [4, 8]}]}}, "arch.widths[0] must be whole numbers"),
    # every shape dimension is a count in bounds, whatever form it takes (found by a review: a choice
    # of [8, "a"] raised TypeError, "convs": "x" passed and failed in the first draw)
    ({"arch": {"widths": [{"choice": [8, "a"]}, {"int": [4, 8]}, {"int": [4, 8]}]}}, "arch.widths[0] must be whole"),
    ({"arch": {"widths": [{"int": [4, 10 ** 6]}, {"int": [4, 8]}, {"int": [4, 8]}]}}, "from 1 to 1024"),
    ({"arch": {"convs": "x"}}, "arch.convs must be whole numbers"),
    ({"arch": {"convs": {"choice": [2, 3.5]}}}, "arch.convs must be whole numbers"),
    ({"arch": {"convs": 10 ** 19}}, "arch.convs must be whole numbers from 1 to 8"),
    ({"arch": {"padding": 2}}, "arch.padding must be whole numbers from 0 to 1"),
    ({"arch": {"squeeze_width": True}}, "arch.squeeze_width must be whole numbers"),
    ({"arch": {"squeeze": 1}}, "arch.squeeze must be among true, false"),
    ({"arch": {"bias": "no"}}, "arch.bias must be among true, false"),
    ({"arch": {"widths": 5}}, "one width range per block"),
    ({"arch": {"order": {"choice": ["relu-bn", "bn-bn"]}}}, "arch.order"),
    ({"arch": {"separable": {"choice": [False, 1]}}}, "arch.separable"),
    ({"arch": {"separable": "yes"}}, "arch.separable"),
    ({"recipe": {"scheduler": {"choice": ["step", "cosine"]}}}, "recipe.scheduler"),
    ({"recipe": {"dropout": {"float": [0.0, 1.5]}}}, "recipe.dropout"),
    ({"recipe": {"ema": {"choice": [0.0, 1.0]}}}, "recipe.ema"),
    ({"recipe": {"lr": {"float": [0.0, 0.1], "log": True}}}, "bad float range"),
    ({"recipe": {"batch_size": {"choice": []}}}, "distinct values"),
    ({"recipe": {"batch_size": {"choice": [32, 32]}}}, "distinct values"),
    ({"recipe": {"lr": {"floaty": [0.1, 0.2]}}}, "one of int, float, choice"),
    ({"recipe": {"lr": [0.1, 0.2]}}, "not a dimension"),
    ([1, 2], "JSON object"),
    ({"arch": [], "recipe": {}}, "must be JSON objects"),
])
def test_bad_space_files_are_refused_with_a_reason(doc, needle):
    with pytest.raises(SpaceError, match=needle.replace("[", r"\[")):
        SearchSpace.from_dict(doc)


def test_a_space_that_cannot_build_a_draw_says_why():
    space = SearchSpace(padding=Fixed(0), convs=Fixed(4), blocks=Fixed(3))
    with pytest.raises(SpaceError, match="block 3: 4 unpadded"):
        space.sample(optuna.trial.FixedTrial({"downsample": "maxpool", "b1_convs": 4, "b1_squeeze": False, "b2_convs": 4,
                                              "b2_squeeze": False, "b3_convs": 4}))


def _fitting_specs_by(space, name: str, n: int, budget: int, seed: int) -> dict[bool, list]:
    """n random draws of `space` under `budget`, checked to fit, their specs by the value the draw
    took for the true/false dimension `name`; both values must occur."""
    draws = random_draws(space, n, budget, seed=seed)
    assert max(count_params(spec) for spec, _, _ in draws) < budget
    by = {True: [], False: []}
    for spec, _, params in draws:
        by[params[name]].append(spec)
    assert by[True] and by[False]
    return by


def test_linear_depthwise_draws_drop_the_depthwise_units_and_fit_the_budget():
    space = SearchSpace.from_dict({"arch": {"separable": True, "linear_depthwise": {"choice": [False, True]}}})
    by = _fitting_specs_by(space, "linear_depthwise", 120, 4000, seed=4)
    for linear, specs in by.items():
        for spec in specs:
            depthwise = [l for l in spec.layers if l.op == "conv" and l.groups > 1]
            assert depthwise and all(l.linear == linear for l in depthwise)
            assert not any(l.linear for l in spec.layers if l.groups == 1)  # only the depthwise step
    # the smallest of such a space is linear (no depthwise BN), and nothing drawn is smaller
    smallest = space.smallest()
    assert any(l.linear for l in smallest.layers)
    assert count_params(smallest) <= min(count_params(spec) for specs in by.values() for spec in specs)
    # without separable it is never asked, and a bad value is refused up front
    assert "linear_depthwise" not in random_draws(SearchSpace.from_dict(
        {"arch": {"linear_depthwise": True}}), 5, None, seed=1)[0][2]
    with pytest.raises(SpaceError, match="arch.linear_depthwise must be among true, false"):
        SearchSpace.from_dict({"arch": {"separable": True, "linear_depthwise": {"choice": ["yes"]}}})


def test_a_linear_depthwise_draw_is_described_as_such():
    from storage.notes import describe_arch
    space = SearchSpace.from_dict({"arch": {"separable": True, "linear_depthwise": True}})
    spec, _ = space.sample(optuna.trial.FixedTrial({**MODEL6_POINT, "separable": True, "linear_depthwise": True}))
    assert "a linear depthwise 3x3 (no ReLU/BN), then a 1x1" in describe_arch(spec)


def test_factorized_depthwise_draws_a_3x1_1x3_depthwise_before_each_1x1_and_fits_the_budget():
    space = SearchSpace.from_dict({"arch": {"separable": True, "linear_depthwise": True,
                                            "factorized_depthwise": {"choice": [False, True]}}})
    by = _fitting_specs_by(space, "factorized_depthwise", 120, 3000, seed=5)
    for factorized, specs in by.items():
        for spec in specs:
            depthwise = [l for l in spec.layers if l.groups > 1]
            assert depthwise and all(l.op == ("fconv" if factorized else "conv") and l.linear for l in depthwise)
            assert not any(l.op == "fconv" for l in spec.layers if l.groups == 1)  # only the depthwise step
    # the same point factorized is 3*C smaller per depthwise step, and the smallest model takes it
    point = {**MODEL6_POINT, "separable": True, "linear_depthwise": True}
    plain = space.sample(optuna.trial.FixedTrial({**point, "factorized_depthwise": False}))[0]
    fdw = space.sample(optuna.trial.FixedTrial({**point, "factorized_depthwise": True}))[0]
    saved = sum(3 * l.out for l in fdw.layers if l.op == "fconv")
    assert saved > 0 and count_params(plain) - count_params(fdw) == saved
    assert any(l.op == "fconv" for l in space.smallest().layers)
    # the budget cap counts the factorized depthwise: the saving is there to be spent on width
    structure = [(3, 1, False), (3, 1, False), (2, 0, False)]
    shape = dict(separable=True, linear=True, factorized=False, downsample="maxpool")
    caps = {f: space._widest_that_fits(structure, [10, 14, 10], [4] * 4, IntRange(4, 40), 1500, False,
                                       {**shape, "factorized_depthwise": f}) for f in (False, True)}
    assert caps[True] > caps[False]
    # a space file written before the dimension existed reads it as off; the default fixes it off;
    # without separable it is never asked; a bad value is refused up front
    assert SearchSpace.ABSENT_MEANS["factorized_depthwise"] is False
    assert SearchSpace.from_dict({"arch": {"factorized_depthwise": True}}).factorized_depthwise == Fixed(True)
    assert "factorized_depthwise" in SearchSpace.default().to_dict()["arch"]
    assert "factorized_depthwise" not in random_draws(SearchSpace.from_dict(
        {"arch": {"separable": False, "factorized_depthwise": {"choice": [False, True]}}}), 5, None, seed=1)[0][2]
    with pytest.raises(SpaceError, match="arch.factorized_depthwise must be among true, false"):
        SearchSpace.from_dict({"arch": {"factorized_depthwise": {"choice": [1]}}})


def test_activation_is_drawn_by_default_absent_means_relu_and_a_space_can_fix_it():
    assert SearchSpace.default().activation == Choice(("relu", "silu")) and SearchSpace.ABSENT_MEANS["activation"] == "relu"
    assert SearchSpace.from_dict({"arch": {}}).activation == Fixed("relu")  # a space stored before it: as searched
    relu = SearchSpace.from_dict({"arch": {"activation": "relu"}})
    assert all(spec.activation == "relu" for spec, _, _ in random_draws(relu, 10, 8000, seed=2))
    both = SearchSpace.default()
    draws = random_draws(both, 40, 8000, seed=3)
    assert {params["activation"] for _, _, params in draws} == {"relu", "silu"}
    assert all(spec.activation == params["activation"] for spec, _, params in draws)
    silu = SearchSpace.from_dict({"arch": {"activation": "silu"}})
    trial = optuna.trial.FixedTrial({k: v for k, v in MODEL6_POINT.items() if k != "activation"})
    spec, _ = silu.sample(trial)
    assert spec.activation == "silu" and "activation" not in trial.params  # fixed: never a trial parameter
    with pytest.raises(SpaceError, match="arch.activation must be among relu, silu"):
        SearchSpace.from_dict({"arch": {"activation": "tanh"}})
