"""The architecture spec: one frozen, JSON-serialisable description of a small CNN.

The same type is what the search samples, what build_model() turns into an nn.Module and what a
model file stores. Parameter counts come from the spec alone, so the budget is checked before any
tensor is allocated.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, asdict

from space.target import MAX_PARAMS as DEFAULT_MAX_PARAMS

IMAGE_SIZE = 28
from space.ops import ACTIVATIONS as ACTIVATION_TABLE, OPS as OP_TABLE  # noqa: E402  (the registries)

OPS = tuple(OP_TABLE)
ORDERS = ("relu-bn", "bn-relu")  # inside a conv unit: Conv-ReLU-BN (the seed's) or Conv-BN-ReLU
ACTIVATIONS = tuple(ACTIVATION_TABLE)  # the units' nonlinearity: space.ops.ACTIVATIONS says what each is
MAX_WIDTH = 4096  # refuse absurd widths before anything is allocated


class SpecError(ValueError):
    """A spec that cannot be built (bad op, kernel, shapes that do not end at 1x1)."""


class BudgetError(ValueError):
    """A spec whose parameter count is not under the budget."""

    def __init__(self, params: int, limit: int):
        self.params, self.limit = params, limit
        super().__init__(f"{params:,} parameters is over the budget: must be fewer than {limit:,}")


@dataclass(frozen=True)
class Layer:
    """One step of the network. What each op is, counts and builds is its row in space.ops.

    conv:    kernel x kernel convolution (stride 1) to `out` channels, then ReLU and BatchNorm (in
             the spec's `order`), then Dropout. `groups` > 1 splits the channels into that many
             groups convolved apart (PyTorch's Conv2d groups): a 3x3 conv with groups = in = out
             channels is depthwise, and followed by a 1x1 conv it is a depthwise-separable pair,
             9*C + C*C' weights instead of 9*C*C'. `linear` true: no ReLU, BN or Dropout after
             this convolution, its output goes straight into the next (Xception's depthwise step:
             a linear depthwise 3x3 then the 1x1's ReLU/BN; saves the depthwise BN's 2*C).
    maxpool: 2x2 max-pool, stride 2 (a transition between blocks).
    gap:     global average pooling over whatever spatial size arrives.
    head:    kernel x kernel convolution to the classes; no ReLU/BN/Dropout, its output is the logits.
    fconv:   factorized 3x3: a 3x1 convolution to `out`, then a 1x3, then ReLU/BN (3*C*W + 3*W*W weights);
             `groups` and `linear` as for conv (a linear factorized depthwise: 6*C weights, not 9*C).
    sconv:   strided 3x3: a 3x3 convolution with stride 2 to `out`, then ReLU/BN, in place of a max-pool.
    """
    op: str
    out: int = 0
    kernel: int = 3
    padding: int = 0
    groups: int = 1
    linear: bool = False

    def to_dict(self) -> dict:
        if self.op in ("maxpool", "gap"):
            return {"op": self.op}
        d = {"op": self.op, "out": self.out, "kernel": self.kernel}
        if self.padding:
            d["padding"] = self.padding
        if self.groups != 1:  # written only when used, so older spec files read back identical
            d["groups"] = self.groups
        if self.linear:  # likewise
            d["linear"] = True
        return d


@dataclass(frozen=True)
class ArchSpec:
    layers: tuple[Layer, ...]
    batchnorm: bool = True
    bias: bool = False
    in_channels: int = 1
    num_classes: int = 10
    order: str = "relu-bn"
    activation: str = "relu"  # the units' nonlinearity (ACTIVATIONS); the order's "relu" names its place
    name: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    # JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "batchnorm": self.batchnorm,
            "bias": self.bias,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "order": self.order,
            # written only when not ReLU, so every spec file and stored spec from before reads back identical
            **({"activation": self.activation} if self.activation != "relu" else {}),
            "layers": [l.to_dict() for l in self.layers],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        if not isinstance(d, dict) or "layers" not in d:
            raise SpecError("an architecture spec is a JSON object with a 'layers' list")
        known = {"name", "description", "batchnorm", "bias", "in_channels", "num_classes", "order", "activation",
                 "layers"}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown spec fields: {', '.join(sorted(unknown))}")
        if not isinstance(d["layers"], list):
            raise SpecError("'layers' must be a list of layer objects")
        layers = []
        for i, l in enumerate(d["layers"]):
            if not isinstance(l, dict) or "op" not in l:
                raise SpecError(f"layer {i} must be an object with an 'op'")
            extra = set(l) - {"op", "out", "kernel", "padding", "groups", "linear"}
            if extra:
                raise SpecError(f"layer {i}: unknown fields {', '.join(sorted(extra))}")
            layers.append(Layer(**l))
        return cls(layers=tuple(layers), **{k: v for k, v in d.items() if k != "layers"})

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        return cls.from_dict(parse_json(text, SpecError))

    # Derived facts ----------------------------------------------------------------------------
    def convs(self) -> list[Layer]:
        return [l for l in self.layers if OP_TABLE[l.op].convolves]

    def spatial_sizes(self) -> list[int]:
        """Side length after each layer (input 28)."""
        n, sizes = IMAGE_SIZE, []
        for l in self.layers:
            n = OP_TABLE[l.op].out_size(l, n)
            sizes.append(n)
        return sizes


def parse_json(text: str | bytes, error: type[Exception]):
    """json.loads of text a user handed us (spec, space, points, recipe files; a model file's
    metadata), anything the parser refuses reported as `error` in one line: a syntax error, an
    integer too long to convert (Python's 4,300-digit limit: ValueError), nesting too deep for the
    parser (RecursionError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # after JSONDecodeError, a ValueError of its own
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0][:120]
        raise error(f"not valid JSON ({what})") from None


def _ops_with(flag: str) -> str:
    """'conv, fconv and head': the ops whose registry entry has `flag`, for an error line."""
    names = [name for name, op in OP_TABLE.items() if getattr(op, flag)]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(spec: ArchSpec) -> None:
    if not spec.layers:
        raise SpecError("a spec needs at least one layer")
    for name, ok in (("batchnorm", isinstance(spec.batchnorm, bool)), ("bias", isinstance(spec.bias, bool)),
                     ("in_channels", _is_int(spec.in_channels) and 1 <= spec.in_channels <= 3),
                     ("num_classes", _is_int(spec.num_classes) and 2 <= spec.num_classes <= 1000),
                     ("name", isinstance(spec.name, str)), ("description", isinstance(spec.description, str)),
                     ("order", spec.order in ORDERS), ("activation", spec.activation in ACTIVATIONS)):
        if not ok:
            choices = {"order": ORDERS, "activation": ACTIVATIONS}.get(name)
            raise SpecError(f"bad value for {name!r}: {getattr(spec, name)!r:.60}"
                            + (f" (one of {', '.join(choices)})" if choices else ""))
    n, cin = IMAGE_SIZE, spec.in_channels
    for i, l in enumerate(spec.layers):
        where = f"layer {i} ({l.op})"
        if not isinstance(l.op, str) or l.op not in OPS:
            raise SpecError(f"layer {i}: op must be one of {', '.join(OPS)}")
        if not (_is_int(l.out) and _is_int(l.kernel) and _is_int(l.padding) and _is_int(l.groups)):
            raise SpecError(f"{where}: out, kernel, padding and groups must be integers")
        if not isinstance(l.linear, bool):
            raise SpecError(f"{where}: linear must be true or false")
        op = OP_TABLE[l.op]
        if l.linear and not op.linear:
            raise SpecError(f"{where}: linear belongs to {_ops_with('linear')} layers only (the head is linear already)")
        if op.convolves:
            if l.kernel not in op.kernels:
                raise SpecError(f"{where}: kernel must be {' or '.join(map(str, op.kernels))}, got {l.kernel}")
            if l.padding not in (0, 1) or (l.kernel == 1 and l.padding):
                raise SpecError(f"{where}: padding must be 0 or 1 (0 for 1x1)")
            if l.out < 1 or l.out > MAX_WIDTH:
                raise SpecError(f"{where}: out channels must be between 1 and {MAX_WIDTH}, got {l.out}")
            if l.groups != 1 and not op.grouped:
                raise SpecError(f"{where}: groups belongs to {_ops_with('grouped')} layers only")
            if l.groups < 1 or cin % l.groups or l.out % l.groups:
                raise SpecError(f"{where}: groups must divide both its input ({cin}) and output "
                                f"({l.out}) channels, got {l.groups}")
            cin = l.out
        elif l.groups != 1:
            raise SpecError(f"{where}: groups belongs to {_ops_with('grouped')} layers only")
        elif l.op == "maxpool" and n < 2:
            raise SpecError(f"{where}: nothing left to pool (spatial size {n})")
        n = op.out_size(l, n)
        if n < 1:
            raise SpecError(f"{where}: spatial size shrinks below 1")
    last = spec.layers[-1]
    if last.op != "head" or sum(l.op == "head" for l in spec.layers) != 1:
        raise SpecError("the last layer, and only the last, must be the head")
    if last.out != spec.num_classes:
        raise SpecError(f"the head must output {spec.num_classes} classes, got {last.out}")
    if n != 1:
        raise SpecError(f"the head must see a 1x1 map to give one prediction per image, got {n}x{n}")


def count_params(spec: ArchSpec) -> int:
    """Trainable parameters, from the spec alone (must equal the built module's sum of numel)."""
    return count_layer_params(spec.layers, in_channels=spec.in_channels, batchnorm=spec.batchnorm, bias=spec.bias)


def count_layer_params(layers, *, in_channels: int = 1, batchnorm: bool = True, bias: bool = False) -> int:
    """count_params of a layer list not yet checked as a spec (the space's budget cap counts
    candidate widths this way, with the same arithmetic: each op's row in space.ops)."""
    total, cin = 0, in_channels
    for l in layers:
        op = OP_TABLE[l.op]
        total += op.params(l, cin=cin, batchnorm=batchnorm, bias=bias)
        cin = l.out if op.convolves else cin
    return total


def check_budget(spec: ArchSpec, max_params: int = DEFAULT_MAX_PARAMS) -> int:
    """Return the count, or raise BudgetError when it is not under max_params."""
    n = count_params(spec)
    if n >= max_params:
        raise BudgetError(n, max_params)
    return n
