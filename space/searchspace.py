"""The search space: what a trial may sample, as data.

A `SearchSpace` holds one *dimension* per choice a trial makes. Each dimension is a fixed value or
a range Optuna samples from, written in JSON as

    3                              a fixed value (never sampled)
    {"int": [lo, hi]}              an integer in lo..hi        (optional "step", "log": true)
    {"float": [lo, hi]}            a float in [lo, hi]         (optional "step", or "log": true)
    {"choice": [a, b, ...]}        one of the values

The architecture part builds a family of small CNNs: 2-3 blocks of 3x3 convolutions (padding 0 or 1
per block, so a block keeps or shrinks its resolution), an optional 1x1 squeeze before each 2x2
max-pool, global average pooling and a 1x1 head; Conv-ReLU-BN or Conv-BN-ReLU units; optionally
depthwise-separable (each 3x3 convolution after the first as a depthwise 3x3 then a 1x1). The recipe
part holds one dimension per field of `TrainConfig` (space/recipe.py): lr, momentum, batch size,
dropout, rotation/shift/scale, the scheduler and its settings.

`SearchSpace.sample(trial)` is the only code that makes Optuna parameter names. It is budget-aware:
widths are drawn one at a time, each capped by what the budget still allows once every later layer
is at its narrowest, so a budget above `smallest()` admits every draw; the hard budget check stays
as the guard before anything is built.

>>> import optuna
>>> space = SearchSpace.default()
>>> spec, recipe = space.sample(optuna.trial.FixedTrial(MODEL6_POINT))
>>> from space.spec import count_params
>>> count_params(spec), recipe.scheduler, recipe.step_size
(7416, 'step', 6)
>>> SearchSpace.from_json(space.to_json()) == space
True
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from space.recipe import SCHEDULERS, ConfigError, TrainConfig
from space.ops import OPS
from space.spec import ACTIVATIONS, ORDERS, ArchSpec, Layer, SpecError, IMAGE_SIZE, _is_int, count_layer_params, parse_json


class SpaceError(ValueError):
    """A space file that is not a valid space, or a draw the space cannot build."""


# Dimensions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial, name: str, low=None, high=None):
        fixed = getattr(trial, "fixed", None)  # a recording trial (SearchSpace.complete) hears fixed values too
        if fixed is not None:
            fixed(name, self.value)
        return self.value

    def contains(self, v) -> bool:
        return v == self.value

    def lowest(self):
        return self.value

    def to_json(self):
        return self.value


class _Range:
    """What an int and a float range share: the lowest value and the JSON form ({"int": [lo, hi]},
    with "step" only where it is not the kind's plain step, and "log" only where set)."""
    KIND: ClassVar[str]
    PLAIN_STEP: ClassVar[object]

    def lowest(self):
        return self.low

    def to_json(self):
        d: dict = {self.KIND: [self.low, self.high]}
        if self.step != self.PLAIN_STEP:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        return d


@dataclass(frozen=True)
class IntRange(_Range):
    KIND: ClassVar[str] = "int"
    PLAIN_STEP: ClassVar[object] = 1
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step)):
            raise SpaceError(f"int range needs integers, got {self.to_json()}")
        if self.low > self.high or self.step < 1 or (self.log and (self.low < 1 or self.step != 1)):
            raise SpaceError(f"bad int range {self.to_json()}")

    def suggest(self, trial, name: str, low=None, high=None):
        """low/high narrow the range for this draw (budget and shape caps); never widen it."""
        lo = self.low if low is None else max(self.low, min(low, self.high))
        hi = self.high if high is None else min(self.high, max(high, lo))
        return trial.suggest_int(name, lo, hi, step=self.step, log=self.log)

    def contains(self, v) -> bool:
        return isinstance(v, int) and self.low <= v <= self.high and (v - self.low) % self.step == 0


@dataclass(frozen=True)
class FloatRange(_Range):
    KIND: ClassVar[str] = "float"
    PLAIN_STEP: ClassVar[object] = None
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __post_init__(self):
        nums = (self.low, self.high) + ((self.step,) if self.step is not None else ())
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in nums):
            raise SpaceError(f"float range needs finite numbers, got {self.to_json()}")
        if self.low > self.high or (self.step is not None and (self.step <= 0 or self.log)) \
                or (self.log and self.low <= 0):
            raise SpaceError(f"bad float range {self.to_json()}")

    def suggest(self, trial, name: str, low=None, high=None):
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, v) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not self.low <= v <= self.high:
            return False
        return self.step is None or abs(round((v - self.low) / self.step) * self.step - (v - self.low)) < 1e-9


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __post_init__(self):
        if not self.values or len(set(map(repr, self.values))) != len(self.values):
            raise SpaceError(f"a choice needs distinct values, got {list(self.values)}")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in self.values):
            raise SpaceError(f"choices must be numbers, strings, booleans or null, got {list(self.values)}")

    def suggest(self, trial, name: str, low=None, high=None):
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, v) -> bool:
        return any(v == c and type(v) is type(c) for c in self.values) or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and any(
                isinstance(c, (int, float)) and not isinstance(c, bool) and v == c for c in self.values))

    def lowest(self):
        return min(self.values)

    def to_json(self):
        return {"choice": list(self.values)}


Dim = Fixed | IntRange | FloatRange | Choice


def _values(dim: Dim) -> tuple:
    """Every value a Fixed or Choice dimension can give; () for a range."""
    return dim.values if isinstance(dim, Choice) else (dim.value,) if isinstance(dim, Fixed) else ()


def dim_from_json(value, where: str) -> Dim:
    if isinstance(value, dict):
        kinds = [k for k in ("int", "float", "choice") if k in value]
        extra = set(value) - {"int", "float", "choice", "step", "log"}
        if len(kinds) != 1 or extra:
            raise SpaceError(f"{where}: a dimension is a value, or an object with one of int, float, "
                             f"choice (and optional step, log), got {json.dumps(value)}")
        kind, spec = kinds[0], value[kinds[0]]
        if not isinstance(spec, list):
            raise SpaceError(f"{where}: {kind} takes a list, got {json.dumps(spec)}")
        if kind == "choice":
            if "step" in value or "log" in value:
                raise SpaceError(f"{where}: a choice takes no step or log")
            try:
                return Choice(tuple(spec))
            except SpaceError as e:
                raise SpaceError(f"{where}: {e}") from None
        if len(spec) != 2:
            raise SpaceError(f"{where}: {kind} takes [low, high], got {json.dumps(spec)}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"{where}: log must be true or false")
        try:
            if kind == "int":
                return IntRange(spec[0], spec[1], value.get("step", 1), log)
            return FloatRange(spec[0], spec[1], value.get("step"), log)
        except SpaceError as e:
            raise SpaceError(f"{where}: {e}") from None
    if value is None or isinstance(value, (bool, int, float, str)):
        return Fixed(value)
    raise SpaceError(f"{where}: not a dimension: {json.dumps(value)}")


# The space --------------------------------------------------------------------------------------

MAX_CONVS = 8  # 3x3 convolutions per block at most: a bound on what a file may ask (the default draws 1-4)
MAX_WIDTH = 1024  # channels per layer at most: far past any budget this service is for (8,000 parameters)
DOWNSAMPLES = ("maxpool", "stride")  # arch.downsample: a max-pool, or the block's last 3x3 with stride 2

# Recipe settings that only mean something under some schedulers: sampled only when one is chosen.
# (OneCycleLR sets the rate itself, from max_lr, so lr is not drawn for it.)
SCHEDULER_OF = {"lr": ("step", "none"), "step_size": ("step",), "gamma": ("step",),
                "max_lr": ("onecycle",), "pct_start": ("onecycle",)}
# Recipe fields a trial never samples: the study's settings or the machine's decide them.
RUN_FIELDS = ("epochs", "seed", "threads", "allow_long", "pooled_dropout")
RECIPE_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in RUN_FIELDS)


def _default_recipe() -> dict:
    return {
        # With momentum 0.9 the same nominal rate is ~10x stronger than plain SGD's (public notes).
        "lr": FloatRange(0.005, 0.2, log=True),
        "momentum": Choice((0.0, 0.5, 0.8, 0.9, 0.95)),
        "weight_decay": Fixed(0.0),
        "batch_size": Choice((32, 64, 128)),  # public sub-5K solutions train with 32-64
        "scheduler": Choice(("step", "onecycle")),
        "step_size": IntRange(3, 12),
        "gamma": FloatRange(0.05, 0.5, log=True),
        "max_lr": FloatRange(0.02, 0.5, log=True),
        "pct_start": FloatRange(0.1, 0.5, step=0.05),
        "rotation": FloatRange(0.0, 12.0, step=1.0),
        "shift": FloatRange(0.0, 0.1, step=0.01),
        "scale": FloatRange(0.0, 0.1, step=0.01),
        "fill": Fixed(0.0),
        "dropout": FloatRange(0.0, 0.1, step=0.01),  # 0-0.01 is what works below 5K (public notes)
        "label_smoothing": Fixed(0.0),
        # A weight average (with its warm-up, search/train.py): every shipped linear-depthwise model
        # trained with 0.999
        "ema": Choice((0.0, 0.999)),
    }


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may sample. Frozen and comparable: a study stores it and refuses another."""
    blocks: Dim = IntRange(2, 3)
    convs: Dim = IntRange(1, 4)  # 3x3 convolutions per block, drawn per block
    padding: Dim = IntRange(0, 1)  # per block: 1 keeps the resolution, 0 shrinks it by 2 per conv
    # per block; its length caps blocks. Wide enough for the shipped linear-depthwise designs (under8k:
    # 19-24 / 24-38 / 22-29); the budget caps every draw's widths anyway.
    widths: tuple = (IntRange(4, 24), IntRange(4, 40), IntRange(4, 40))
    squeeze: Dim = Choice((False, True))  # a 1x1 convolution before each max-pool
    squeeze_width: Dim = IntRange(4, 16)
    order: Dim = Choice(ORDERS)
    # The units' nonlinearity (space.spec.ACTIVATIONS). Drawn by default: every shipped model is ReLU,
    # but SiLU beat it under 3,000 parameters on each of 4 paired seeds, mean +0.07 in the last-3
    # validation minimum, with lower validation and training loss on every seed (experiments/design-check
    # round 3; find-3k-v4 trial 0 against find-3k-v2's), for about 20 % more seconds an epoch here.
    # At 3,600 it was a draw (5 paired seeds, mean +0.008, round 4), so the prior's start points
    # keep ReLU (search/prior.py LESSONS) and the sampler decides.
    activation: Dim = Choice(("relu", "silu"))
    bias: Dim = Fixed(False)
    # True: every 3x3 convolution after the network's first is a depthwise 3x3 (groups = its input
    # channels) and a 1x1 to the drawn width, each with its ReLU/BN: 9*C + C*W weights, not 9*C*W.
    # Drawn in the default space: the linear-depthwise separable family produced under3762, under4k
    # and under8k (docs/results.md); a first plain-ReLU trial of it had held only 99.07/99.13 on
    # validation (experiments/separable-check).
    separable: Dim = Choice((False, True))
    # With separable: True makes each depthwise 3x3 linear (no ReLU/BN of its own; the 1x1's follow),
    # as in Xception, which found that better than a nonlinearity between the two (Chollet 2017, Xception,
    # "Effect of an intermediate activation"); it also saves the depthwise BN's 2*C parameters. Drawn only
    # when separable is; every shipped separable model has it.
    linear_depthwise: Dim = Choice((True, False))
    # With separable: True factorizes each depthwise 3x3 into a 3x1 then a 1x3 (op fconv with groups =
    # channels): 6*C weights instead of 9*C. Under 3,000 parameters a separable net spends about a
    # third of its parameters on depthwise 3x3s (experiments/design-check's base: 945 of 2,999), so
    # the saving buys width. Fixed off by default: at 2,992 parameters (experiments/design-check, round
    # 2, seeds 20001-20002) it scored 99.33 / 99.19 against base's 99.26 / 99.22, a draw, for about
    # 8 % more seconds an epoch on this CPU.
    factorized_depthwise: Dim = Fixed(False)
    # True (drawn only where separable is not): every 3x3 convolution after the network's first is
    # factorized, a 3x1 then a 1x3 (op "fconv"): 3*C*W + 3*W*W weights instead of 9*C*W, as in the
    # smallest public design under 3,200 parameters.
    factorized: Dim = Choice((False, True))
    # How a block hands over to the next: "maxpool" (a 2x2 max-pool) or "stride" (the block's last
    # 3x3 convolution has stride 2, op "sconv": a learnt pool in place of the max-pool).
    downsample: Dim = Choice(DOWNSAMPLES)
    recipe: dict = field(default_factory=_default_recipe)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        if not isinstance(self.blocks, (Fixed, IntRange)) or not isinstance(self.blocks.lowest(), int) \
                or self.blocks.lowest() < 1:
            raise SpaceError("arch.blocks must be a positive integer or an int range")
        top = self.blocks.high if isinstance(self.blocks, IntRange) else self.blocks.value
        if top > len(self.widths):
            raise SpaceError(f"arch.blocks goes up to {top} but arch.widths has {len(self.widths)} ranges")
        unknown = set(self.recipe) - set(RECIPE_FIELDS)
        if unknown:
            raise SpaceError(f"recipe: unknown settings {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(RECIPE_FIELDS)})")
        recipe = {**_default_recipe(), **self.recipe}
        object.__setattr__(self, "recipe", {k: recipe[k] for k in RECIPE_FIELDS if k in recipe})
        sched = self.recipe.get("scheduler", Fixed("step"))
        choices = _values(sched)
        if not choices or any(c not in SCHEDULERS for c in choices):
            raise SpaceError(f"recipe.scheduler must be among {', '.join(SCHEDULERS)}")
        # The shape dimensions are counts: integers, in bounds that build (a width of 10**6 or a
        # choice of [8, "a"] would fail deep inside a draw, or allocate without end).
        for where, dim, lo, hi in ([("arch.convs", self.convs, 1, MAX_CONVS), ("arch.padding", self.padding, 0, 1),
                                    ("arch.squeeze_width", self.squeeze_width, 1, MAX_WIDTH)]
                                   + [(f"arch.widths[{i}]", w, 1, MAX_WIDTH) for i, w in enumerate(self.widths)]):
            vals = (dim.low, dim.high) if isinstance(dim, IntRange) else _values(dim)
            if not vals or not all(_is_int(v) and lo <= v <= hi for v in vals):
                raise SpaceError(f"{where} must be whole numbers from {lo} to {hi} (a value, an int range or a choice), "
                                 f"got {json.dumps(dim.to_json())}")
        for name in ("squeeze", "bias"):
            vals = _values(getattr(self, name))
            if not vals or not all(isinstance(v, bool) for v in vals):
                raise SpaceError(f"arch.{name} must be among true, false")
        for name, ok, say in (("order", lambda v: v in ORDERS, ", ".join(ORDERS)),
                              ("activation", lambda v: v in ACTIVATIONS, ", ".join(ACTIVATIONS)),
                              ("separable", lambda v: isinstance(v, bool), "true, false"),
                              ("linear_depthwise", lambda v: isinstance(v, bool), "true, false"),
                              ("factorized_depthwise", lambda v: isinstance(v, bool), "true, false"),
                              ("factorized", lambda v: isinstance(v, bool), "true, false"),
                              ("downsample", lambda v: v in DOWNSAMPLES, ", ".join(DOWNSAMPLES))):
            vals = _values(getattr(self, name))
            if not vals or not all(ok(v) for v in vals):
                raise SpaceError(f"arch.{name} must be among {say}")
        if True in _values(self.separable):
            # A separable 3x3 costs 11*C + C*W + 2W against a plain one's 9*C*W + 2W: smaller from W = 2
            # on. A width of 1 would make it larger, and the count no longer grow with the width,
            # which the budget caps and smallest() rely on.
            for where, dim in [(f"arch.widths[{i}]", w) for i, w in enumerate(self.widths)] + [
                    ("arch.squeeze_width", self.squeeze_width)]:
                if isinstance(dim.lowest(), int) and dim.lowest() < 2:
                    raise SpaceError(f"{where} must start at 2 or more when arch.separable can be true")
        for key, dim in self.recipe.items():  # every value the space can draw must be a valid recipe
            corners = dim.values if isinstance(dim, Choice) else (dim.value,) if isinstance(dim, Fixed) \
                else (dim.low, dim.high)
            for v in corners:
                try:
                    self._recipe({key: v})
                except ConfigError as e:
                    raise SpaceError(f"recipe.{key}: {e}") from None

    # JSON ----------------------------------------------------------------------------------------
    ARCH_KEYS = ("blocks", "convs", "padding", "widths", "squeeze", "squeeze_width", "order", "activation", "bias", "separable",
                 "linear_depthwise", "factorized_depthwise", "factorized", "downsample")
    # A stored space written before a dimension existed sampled without it: absent means this
    # (not today's default, which may draw it), so old studies read back as what they searched.
    ABSENT_MEANS = {"activation": "relu", "separable": False, "linear_depthwise": False, "factorized_depthwise": False, "factorized": False,
                    "downsample": "maxpool"}
    RECIPE_ABSENT_MEANS = {"ema": 0.0}  # no weight average: what a recipe without the setting trained

    @classmethod
    def default(cls) -> "SearchSpace":
        return cls()

    def to_dict(self) -> dict:
        arch = {k: getattr(self, k).to_json() for k in self.ARCH_KEYS if k != "widths"}
        arch["widths"] = [w.to_json() for w in self.widths]
        return {"arch": {k: arch[k] for k in self.ARCH_KEYS},
                "recipe": {k: d.to_json() for k, d in self.recipe.items()}}

    def to_json(self) -> str:
        """JSON with one dimension per line: easy to read and to edit by hand."""
        parts = []
        for part, dims in self.to_dict().items():
            lines = [f'    "{k}": {json.dumps(v)}' for k, v in dims.items()]
            parts.append(f'  "{part}": {{\n' + ",\n".join(lines) + "\n  }")
        return "{\n" + ",\n".join(parts) + "\n}"

    @classmethod
    def from_dict(cls, d) -> "SearchSpace":
        """Missing settings take the default space's value, except a dimension added after the file was
        written (ABSENT_MEANS): absent, it is off, as the file's searches drew it. Unknown ones are refused."""
        if not isinstance(d, dict) or set(d) - {"arch", "recipe"}:
            raise SpaceError("a search space is a JSON object with 'arch' and 'recipe' objects")
        arch, recipe = d.get("arch", {}), d.get("recipe", {})
        if not isinstance(arch, dict) or not isinstance(recipe, dict):
            raise SpaceError("'arch' and 'recipe' must be JSON objects")
        unknown = set(arch) - set(cls.ARCH_KEYS)
        if unknown:
            raise SpaceError(f"arch: unknown settings {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(cls.ARCH_KEYS)})")
        arch = {**cls.ABSENT_MEANS, **arch}
        recipe = {**cls.RECIPE_ABSENT_MEANS, **recipe}
        kw = {k: dim_from_json(v, f"arch.{k}") for k, v in arch.items() if k != "widths"}
        if "widths" in arch:
            if not isinstance(arch["widths"], list) or not arch["widths"]:
                raise SpaceError("arch.widths must be a list with one width range per block")
            kw["widths"] = tuple(dim_from_json(w, f"arch.widths[{i}]") for i, w in enumerate(arch["widths"]))
        kw["recipe"] = {k: dim_from_json(v, f"recipe.{k}") for k, v in recipe.items()}
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls.from_dict(parse_json(text, SpaceError))

    # Sampling ------------------------------------------------------------------------------------
    def sample(self, trial, *, max_params: int | None = None, name: str = "") -> tuple[ArchSpec, TrainConfig]:
        """Draw (spec, recipe) through `trial` (an optuna Trial, FixedTrial, or anything with its
        suggest_* methods). With max_params, widths are capped so the spec fits the budget
        whenever the structure drawn allows it. Raises SpaceError when the draw cannot be built."""
        blocks = self.blocks.suggest(trial, "blocks")
        downsample = self.downsample.suggest(trial, "downsample") if blocks > 1 else "maxpool"
        structure, n = [], IMAGE_SIZE  # per block: (convs, padding, squeeze)
        for b in range(1, blocks + 1):
            pool_after = b < blocks
            need = 2 if pool_after else 1  # side length the block must leave (a pool halves it)
            most_valid = (n - need) // 2  # unpadded 3x3 convs that still leave `need`
            pad = self.padding.suggest(trial, f"b{b}_pad", low=1 if most_valid < self.convs.lowest() else None)
            convs = self.convs.suggest(trial, f"b{b}_convs", high=None if pad else most_valid)
            squeeze = pool_after and bool(self.squeeze.suggest(trial, f"b{b}_squeeze"))
            probe = self._layers([(convs, pad, False)], [1] * convs, downsample=downsample, last_block=not pool_after)
            for layer in probe:  # the block's side lengths, by each op's own arithmetic
                n = OPS[layer.op].out_size(layer, n)
            if n < 1:
                raise SpaceError(f"block {b}: {convs} unpadded convolutions leave no map to hand on")
            structure.append((convs, pad, squeeze))
        order = self.order.suggest(trial, "order")
        activation = self.activation.suggest(trial, "activation")
        bias = self.bias.suggest(trial, "bias")
        separable = self.separable.suggest(trial, "separable")
        linear = bool(separable) and bool(self.linear_depthwise.suggest(trial, "linear_depthwise"))
        factorized_depthwise = bool(separable) and bool(self.factorized_depthwise.suggest(trial, "factorized_depthwise"))
        factorized = not separable and bool(self.factorized.suggest(trial, "factorized"))
        shape = dict(separable=bool(separable), linear=linear, factorized_depthwise=factorized_depthwise,
                     factorized=factorized, downsample=downsample)

        # width slots in layer order: (param name, dimension, kernel)
        slots = []
        for b, (convs, pad, squeeze) in enumerate(structure, 1):
            slots += [(f"b{b}_w{j}", self.widths[b - 1], 3) for j in range(convs)]
            if squeeze:
                slots.append((f"b{b}_sq_w", self.squeeze_width, 1))
        chosen: list[int] = []
        for i, (pname, dim, _) in enumerate(slots):
            cap = None
            if max_params is not None and isinstance(dim, IntRange):
                rest = [d.lowest() for _, d, _ in slots[i + 1:]]
                cap = self._widest_that_fits(structure, chosen, rest, dim, max_params, bool(bias), shape)
            chosen.append(dim.suggest(trial, pname, high=cap))

        layers = self._layers(structure, chosen, **shape)
        try:
            spec = ArchSpec(tuple(layers), batchnorm=True, bias=bool(bias), order=order, activation=activation, name=name)
        except SpecError as e:
            raise SpaceError(f"the draw cannot be built: {e}") from None
        values = {}
        scheduler = self.recipe["scheduler"].suggest(trial, "scheduler") if "scheduler" in self.recipe else "step"
        for key, dim in self.recipe.items():
            if key == "scheduler" or scheduler not in SCHEDULER_OF.get(key, (scheduler,)):
                continue
            values[key] = dim.suggest(trial, key)
        return spec, self._recipe({**values, "scheduler": scheduler})

    @staticmethod
    def _recipe(values: dict) -> TrainConfig:
        return TrainConfig.from_dict(values)

    @staticmethod
    def _layers(structure, widths: list[int], *, separable: bool = False, linear: bool = False,
                factorized_depthwise: bool = False, factorized: bool = False, downsample: str = "maxpool",
                last_block: bool | None = None) -> list[Layer]:
        """The layers these block shapes and widths make. last_block: the structure is one block,
        the last (True) or not (False) - how sample() probes a block's side lengths."""
        layers, it, cin = [], iter(widths), 1
        for b, (convs, pad, squeeze) in enumerate(structure, 1):
            hand_over = (b < len(structure)) if last_block is None else not last_block
            for j in range(convs):
                w = next(it)
                if hand_over and downsample == "stride" and j == convs - 1:
                    layers.append(Layer("sconv", w, kernel=3, padding=pad))  # in place of the max-pool
                elif separable and cin > 1:
                    layers += [Layer("fconv" if factorized_depthwise else "conv", cin, kernel=3, padding=pad,
                                     groups=cin, linear=linear),
                               Layer("conv", w, kernel=1)]
                elif factorized and cin > 1:
                    layers.append(Layer("fconv", w, kernel=3, padding=pad))
                else:
                    layers.append(Layer("conv", w, kernel=3, padding=pad))
                cin = w
            if squeeze:
                cin = next(it)
                layers.append(Layer("conv", cin, kernel=1))
            if hand_over and downsample == "maxpool":
                layers.append(Layer("maxpool"))
        if last_block is None:
            layers += [Layer("gap"), Layer("head", 10, kernel=1)]
        return layers

    @classmethod
    def _count(cls, structure, widths: list[int], bias: bool, shape: dict) -> int:
        """Parameters of the spec these widths make: count_params's own arithmetic (space.ops)."""
        return count_layer_params(cls._layers(structure, widths, **shape), bias=bias)

    def _widest_that_fits(self, structure, chosen, rest, dim: IntRange, max_params: int, bias: bool,
                          shape: dict) -> int:
        """The widest value of `dim` for this slot such that, with every later slot at its
        narrowest, the model stays under max_params (dim.low if even that does not fit)."""
        lo, hi = dim.low, dim.high
        if self._count(structure, chosen + [hi] + rest, bias, shape) < max_params:
            return hi
        while lo < hi:  # the count grows with the width: bisect for the last that fits
            mid = (lo + hi + 1) // 2
            if self._count(structure, chosen + [mid] + rest, bias, shape) < max_params:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def smallest(self) -> ArchSpec:
        """The smallest model the space can build: a budget at or below its count admits nothing."""
        spec, _ = self.sample(_Lowest(self), name="smallest")
        return spec

    def outside(self, params: dict) -> list[str]:
        """Why `params` (Optuna parameter names -> values) is not a point of this space: [] if it is."""
        trial = _Recorder(params)
        try:
            self.sample(trial)
        except (SpaceError, ConfigError, SpecError) as e:
            trial.problems.append(str(e))
        extra = set(params) - trial.asked
        return trial.problems + [f"{p}: not a parameter of this space" for p in sorted(extra)]

    def params_of(self, params: dict) -> int:
        """The parameter count of the model the point `params` builds in this space (check outside()
        first: a value outside the space is replaced by the lowest inside it, a missing one raises
        SpaceError)."""
        from space.spec import count_params
        spec, _ = self.sample(_Recorder(params))
        return count_params(spec)

    def complete(self, params: dict) -> tuple[dict, list[str]]:
        """(point, problems): every value a draw of `params` takes in this space, the fixed ones
        included (a stored trial's params omit them), and why `params` is not a point of it ([] if
        it is). A parameter this space fixes to another value is a problem: the draw would
        silently build something else."""
        trial = _Recorder(params)
        try:
            self.sample(trial)
        except (SpaceError, ConfigError, SpecError) as e:
            trial.problems.append(str(e))
        for name, value in trial.fixed_values.items():
            if name in params and params[name] != value:
                trial.problems.append(f"{name}: this space fixes it to {value!r}, not {params[name]!r}")
        return {**trial.values, **trial.fixed_values}, trial.problems

    def describe(self) -> str:
        """One line per part, for report and the study's note."""
        return "\n".join(f"{part}: {json.dumps(d, separators=(',', ':'))}" for part, d in self.to_dict().items())


def space_diff(old: dict, new: dict, path: str = "") -> list[str]:
    """Where two space dicts differ, as 'arch.widths[1]: {...} -> {...}' lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            where = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{where}: added")
            elif k not in new:
                out.append(f"{where}: removed")
            else:
                out += space_diff(old[k], new[k], where)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and not (
            old and not isinstance(old[0], (dict, list))):
        return [line for i, (a, b) in enumerate(zip(old, new)) for line in space_diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


class _Lowest:
    """A stand-in trial that answers every question with the smallest value allowed."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def suggest_int(self, name, low, high, step=1, log=False):
        return low

    def suggest_float(self, name, low, high, step=None, log=False):
        return low

    def suggest_categorical(self, name, choices):
        if name in ("separable", "linear_depthwise", "factorized_depthwise") and True in choices:
            # with every width >= 2 (checked when the space is made) the separable pair is the smaller,
            # a linear depthwise drops its BN's parameters, and a factorized one has 6*C weights, not 9*C
            return True
        return False if False in choices and name.endswith("_squeeze") else choices[0]


class _Recorder:
    """A stand-in trial that answers from `params` and notes every value outside the space."""

    def __init__(self, params: dict):
        self.params, self.asked, self.problems = params, set(), []
        self.values, self.fixed_values = {}, {}

    def fixed(self, name, value) -> None:
        self.fixed_values[name] = value

    def _get(self, name, ok, desc: str, inside):
        """The point's value; one outside the space is noted, and the draw goes on with `inside` (a
        value of the space), so every problem is found and nothing is built from the outside one
        (a b1_convs of 10**19 would be a list of 10**19 layers)."""
        self.asked.add(name)
        if name not in self.params:
            raise SpaceError(f"{name}: missing")
        v = self.params[name]
        self.values[name] = v
        if not ok(v):
            self.problems.append(f"{name}: {v!r:.40} is outside {desc}")
            return inside
        return v

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._get(name, lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
                         f"{low}..{high}", low)

    def suggest_float(self, name, low, high, step=None, log=False):
        return self._get(name, lambda v: FloatRange(low, high, step, log).contains(v), f"[{low}, {high}]", low)

    def suggest_categorical(self, name, choices):
        return self._get(name, lambda v: Choice(tuple(choices)).contains(v), f"{list(choices)}", choices[0])


# The seed's model6 and its recipe, as a point of the default space (enqueued as a new study's
# first trial when the study's space contains it). test_searchspace checks it samples back to
# exactly BASELINES["model6"] and the default TrainConfig.
MODEL6_POINT = {
    "blocks": 2,
    "b1_pad": 0, "b1_convs": 2, "b1_squeeze": True, "b2_pad": 0, "b2_convs": 4,
    "order": "relu-bn",
    "b1_w0": 8, "b1_w1": 15, "b1_sq_w": 10, "b2_w0": 10, "b2_w1": 12, "b2_w2": 14, "b2_w3": 18,
    "lr": 0.05, "momentum": 0.9, "batch_size": 64, "scheduler": "step", "step_size": 6, "gamma": 0.1,
    "rotation": 7.0, "shift": 0.0, "scale": 0.0, "dropout": 0.05,
    "separable": False, "factorized": False, "downsample": "maxpool", "ema": 0.0, "activation": "relu",
}
