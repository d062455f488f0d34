"""Write the design-check's spec files (issue 26's under3k: is the missing tenth in the design?).

Each variant is under3762's family (linear-depthwise separable units, bn-relu, GAP, 1x1 head) at
3,000 parameters or less, or the factorized family, written in a compact form: a first 3x3
convolution's width, then blocks of units, a 2x2 max-pool between blocks, each block padded or
valid. A unit "s W" is a linear depthwise 3x3 then a 1x1 to W (Xception's pair, as under3762);
"f W" is a factorized 3x3 (3x1 then 1x3, op fconv). Round 2 (more parameters per unit's worth):
"d W" is "s W" with its depthwise factorized (a 3x1 then a 1x3, op fconv with groups: 6 weights a
channel, not 9); "g W" is "s W" with its 1x1 in 2 groups (ShuffleNet's grouped pointwise, half the weights; units
alternate with full 1x1s so the groups mix); "p W" is a 1x1 alone, no depthwise before it. Run from
the repository root:

    .venv/bin/python experiments/design-check/make.py      # writes experiments/design-check/specs/*.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from space.spec import ArchSpec, count_params, validate  # noqa: E402

HERE = Path(__file__).parent
BUDGET = 3000  # issue 26: at most 3,000 parameters

# name: (first conv width, [(padding, [units])...], why)
VARIANTS = {
    "base": (10, [(1, ["s14", "s9"]), (1, ["s13", "s21", "s23"]), (0, ["s15", "s10"])],
             "under3762 with every width x0.87 (the prior's own scaling to 3,000): 2,999 parameters"),
    "pad3": (10, [(1, ["s14", "s9"]), (1, ["s13", "s21", "s23"]), (1, ["s15", "s10"])],
             "base with its 7x7 block padded: the same parameters, 49 positions per unit instead of 25 and 9"),
    "wide7": (8, [(1, ["s10"]), (1, ["s12", "s16", "s18"]), (1, ["s20", "s18", "s13"])],
              "capacity moved to 7x7 (the public notes' idea): one unit at 28x28, three padded at 7x7"),
    "deep14": (10, [(1, ["s12", "s8"]), (1, ["s12", "s16", "s18", "s19"]), (1, ["s14", "s10"])],
               "one more unit at 14x14, narrower, block 3 padded"),
    "fconv": (8, [(1, ["f9"]), (1, ["f10", "f12"]), (0, ["f12"])],
              "the factorized family (the public 3,197-parameter design's 3x1/1x3 convolutions) in this layout"),
    # round 2: where else can 3,000 parameters buy width?
    "gpw": (10, [(1, ["s14", "g12"]), (1, ["s14", "g24", "s24"]), (0, ["g16", "s11"])],
            "base with every other 1x1 in 2 groups (ShuffleNet's grouped pointwise), the saving spent on width"),
    "pwlast": (10, [(1, ["s14", "s10"]), (1, ["s13", "s22", "s24"]), (0, ["s15", "p10"])],
               "base without its last depthwise 3x3 (GAP over 5x5, not 3x3), the saving spent on width"),
    "fdw": (10, [(1, ["d15", "d10"]), (1, ["d14", "d22", "d25"]), (0, ["d16", "d11"])],
            "base with every depthwise 3x3 factorized (6 weights a channel, not 9), the saving spent on width"),
    "fdw3": (10, [(1, ["d14", "d9"]), (1, ["d13", "d21", "d23"]), (0, ["d15", "d14", "d10"])],
             "base's widths, depthwise factorized, the saving spent on a third valid unit at 7x7 (7, 5, 3, 1)"),
    # round 4: does SiLU's lead at 3,000 carry to 3,600? (issue 24's find from the defaults)
    "u3567": (11, [(1, ["s16", "s10"]), (1, ["s15", "s23", "s26"]), (0, ["s16", "s12"])],
              "under3762 with every width x0.97, the prior's first start point at --max-params 3600: 3,567 parameters"),
    # round 5: how far is find-5k-995's best start point from holding 99.5 %? (issue 26)
    "u4979": (13, [(1, ["s19", "s12"]), (1, ["s18", "s29", "s33"]), (0, ["s20", "s14"])],
              "under3762 with every width x1.21, find-5k-995's trial 4 (99.37 on its seed, 99.29 on a confirm seed): 4,979 parameters"),
}
OVER = {"u3567": 3599, "u4979": 4999}  # variants measured at another budget than BUDGET


def layers(first: int, blocks: list) -> list[dict]:
    out = [{"op": "conv", "out": first, "kernel": 3, "padding": 1}]
    cin = first
    for i, (pad, units) in enumerate(blocks):
        if i:
            out.append({"op": "maxpool"})
        for u in units:
            kind, w = u[0], int(u[1:])
            if kind in "sgd":
                pointwise = {"op": "conv", "out": w, "kernel": 1} | ({"groups": 2} if kind == "g" else {})
                out += [{"op": "fconv" if kind == "d" else "conv", "out": cin, "kernel": 3, "padding": pad,
                         "groups": cin, "linear": True}, pointwise]
            elif kind == "p":
                out.append({"op": "conv", "out": w, "kernel": 1})
            else:
                out.append({"op": "fconv", "out": w, "kernel": 3, "padding": pad})
            cin = w
    return out + [{"op": "gap"}, {"op": "head", "out": 10, "kernel": 1}]


def main() -> None:
    (HERE / "specs").mkdir(exist_ok=True)
    for name, (first, blocks, why) in VARIANTS.items():
        spec = ArchSpec.from_dict({"name": name, "description": why, "order": "bn-relu", "bias": False,
                                   "batchnorm": True, "in_channels": 1, "num_classes": 10,
                                   "layers": layers(first, blocks)})
        validate(spec)
        n = count_params(spec)
        assert n <= OVER.get(name, BUDGET), (name, n)
        (HERE / "specs" / f"{name}.json").write_text(spec.to_json() + "\n")
        print(f"{name:8s} {n:5d}  {why}")


if __name__ == "__main__":
    main()
