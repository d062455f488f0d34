"""Receptive-field table from a spec, with the seed write-up's columns."""
from __future__ import annotations

from dataclasses import dataclass

from space.ops import OPS
from space.spec import ArchSpec, IMAGE_SIZE

COLUMNS = ("layer", "kernel", "R_in", "N_in", "J_in", "stride", "padding", "R_out", "N_out", "J_out")


@dataclass(frozen=True)
class RFRow:
    layer: str
    kernel: int
    R_in: int
    N_in: int
    J_in: int
    stride: int
    padding: int
    R_out: int
    N_out: int
    J_out: int


def receptive_field(spec: ArchSpec) -> list[RFRow]:
    """R = receptive field, N = side length, J = jump (distance in input pixels between outputs).

    Global average pooling is a kernel the size of its input with stride 1, as in the seed's table.
    """
    rows, r, n, j, conv_no = [], 1, IMAGE_SIZE, 1, 0
    for l in spec.layers:
        op = OPS[l.op]
        k, s, p = op.rf_step(l, n)
        if op.convolves:
            conv_no += 1
            name = f"conv{conv_no}"
        else:
            name = {"gap": "avgpool"}.get(l.op, l.op)
        n_out = (n + 2 * p - k) // s + 1
        r_out, j_out = r + (k - 1) * j, j * s
        rows.append(RFRow(name, k, r, n, j, s, p, r_out, n_out, j_out))
        r, n, j = r_out, n_out, j_out
    return rows


def head_receptive_field(spec: ArchSpec) -> int:
    return receptive_field(spec)[-1].R_out


def format_rf_table(spec: ArchSpec) -> str:
    rows = [COLUMNS, ("input", "", "", "", "", "", "", 1, IMAGE_SIZE, 1)]
    rows += [tuple(getattr(r, c) for c in COLUMNS) for r in receptive_field(spec)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    fmt = lambda row: "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |"
    lines = [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [fmt(r) for r in rows[1:]])
