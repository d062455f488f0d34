"""`mnist-nas train` with every ReLU of the model replaced by another activation: a probe for
design-check's round 3, written before a spec had an activation field, to ask whether one would
be worth it (the field, `"activation": "silu"`, came after; round 3's runs were made with this).

space.ops builds each unit's nonlinearity as torch.nn.ReLU(), looked up when the model is built,
so rebinding torch.nn.ReLU before study.main() runs swaps it in this process only (`train` trains
in-process). The spec, its parameter count and everything stored are unchanged: activations have
no parameters. Usage, from the repository root:

    .venv/bin/python experiments/design-check/train_act.py silu train --arch SPEC.json [train flags]
"""
import sys
from pathlib import Path

import torch

ACTIVATIONS = {"relu": torch.nn.ReLU, "silu": torch.nn.SiLU, "gelu": torch.nn.GELU, "hardswish": torch.nn.Hardswish}

if __name__ == "__main__":
    act = sys.argv.pop(1)
    if act not in ACTIVATIONS:
        sys.exit(f"error: activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    torch.nn.ReLU = ACTIVATIONS[act]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import study  # noqa: E402
    from space.model import build_model  # noqa: E402
    from space.spec import ArchSpec, Layer  # noqa: E402
    probe = build_model(ArchSpec(layers=(Layer("conv", out=2), Layer("gap"), Layer("head", out=10, kernel=1))))
    assert any(isinstance(m, ACTIVATIONS[act]) for m in probe), "the swap did not reach the builder"
    print(f"activation: {act}")
    sys.exit(study.main(sys.argv[1:]))
