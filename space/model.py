"""Build an nn.Module from an ArchSpec. Dropout's rate is a training setting, so it is passed in."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from space.ops import OPS
from space.spec import ArchSpec

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class PooledDropout(nn.Module):
    """Inverted dropout whose masks are random windows into a pre-drawn Bernoulli pool.

    Why: on this CPU, drawing a fresh Bernoulli mask per element (aten::bernoulli_) took about a
    quarter of a training step for these tiny convs. A window at a random offset into a pool four
    times the mask's size gives every element an independent Bernoulli(1 - p) draw within a step;
    each call also redraws a random 1/16 of the pool so it keeps changing. The cost is a slice and
    a multiply. Randomness comes from torch's global generator, so torch.manual_seed fixes it.
    In eval mode it is the identity, exactly like nn.Dropout.
    """
    REFRESH = 16

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.pool = torch.empty(0)  # not a buffer: it is not part of the model's state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        if self.pool.numel() < 4 * n:
            self.pool = torch.empty(4 * n, device=x.device).bernoulli_(1 - self.p).div_(1 - self.p)
        chunk = max(n // self.REFRESH, 1)
        start = int(torch.randint(0, self.pool.numel() - chunk + 1, ()))
        self.pool[start:start + chunk].bernoulli_(1 - self.p).div_(1 - self.p)
        offset = int(torch.randint(0, self.pool.numel() - n + 1, ()))
        return x * self.pool[offset:offset + n].view_as(x)

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.cpu() move parameters and buffers; the pool is neither (not model state),
        # so it is dropped and redrawn where the next batch is, never left behind on a GPU
        self.pool = torch.empty(0)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def build_model(spec: ArchSpec, dropout: float = 0.0, pooled_dropout: bool = True,
                copies: int = 1) -> nn.Sequential:
    """pooled_dropout=False uses nn.Dropout (the conventional pipeline in `bench`). copies > 1 builds
    that many independent models as one (search.stacked): input channels spec.in_channels * copies,
    logits (batch, copies * num_classes); every parameter and buffer is the copies' own stacked on
    its first dimension, so search.stacked slices one model out of it."""
    layers: list[nn.Module] = []
    cin = spec.in_channels
    make_dropout = PooledDropout if pooled_dropout else nn.Dropout
    for l in spec.layers:
        op = OPS[l.op]
        layers += op.build(l, cin=cin, bias=spec.bias, batchnorm=spec.batchnorm, order=spec.order,
                           dropout=dropout, make_dropout=make_dropout, copies=copies, activation=spec.activation)
        cin = l.out if op.convolves else cin
    return nn.Sequential(*layers)


class Normalised(nn.Module):
    """Wraps a model so it takes float images in [0, 1]: what an exported model file expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def prepare(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    return images_u8.unsqueeze(1).float().div_(255.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x.sub_(MNIST_MEAN).div_(MNIST_STD)


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             model_normalises: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy %, predictions) on uint8 images. model_normalises: the model takes
    [0, 1] images and normalises them itself (an exported model file)."""
    try:
        model.eval()
    except NotImplementedError:
        pass  # a loaded torch.export program: already frozen in eval mode, refuses .eval()
    loss, preds = 0.0, []
    for i in range(0, len(labels), batch_size):
        x = prepare(images[i:i + batch_size])
        out = model(x if model_normalises else normalise(x))
        loss += F.cross_entropy(out, labels[i:i + batch_size], reduction="sum").item()
        preds.append(out.argmax(1))
    preds = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    n = max(len(labels), 1)
    return loss / n, 100.0 * (preds == labels).sum().item() / n, preds
