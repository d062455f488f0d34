"""The layer ops, one row each (timm's registry style): how an op is checked, built, counted,
sized, stepped through in the receptive-field table and put into words. Every place that handles
a layer goes through OPS: the spec checks and count_params (space.spec), the model builder
(space.model), the RF table (space.rf), the notes (storage.notes) and the space's budget cap
(space.searchspace, which counts with count_params). A new op is one row here, plus its space
dimension if searches should draw it.

>>> from space.spec import Layer
>>> OPS["fconv"].params(Layer("fconv", out=8, padding=1), cin=8, batchnorm=True, bias=False)  # 3x1 + 1x3 + BN
400
>>> OPS["fconv"].params(Layer("fconv", out=8, groups=8, linear=True), cin=8, batchnorm=True, bias=False)  # depthwise
48
>>> OPS["sconv"].out_size(Layer("sconv", out=8, padding=1), 7)  # a strided 3x3 halves, rounding up
4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# The units' nonlinearities, one row each: a spec's name for it -> torch.nn's class, which is also
# how a note writes it ("Conv-BN-SiLU"). space.spec.ACTIVATIONS is this table's keys. "relu" is every
# shipped model's; "silu" (x * sigmoid(x)) is what experiments/design-check's round 3 measured.
ACTIVATIONS = {"relu": "ReLU", "silu": "SiLU"}


def _nn():
    """torch.nn, imported when a model is built: the spec's checks and counts need no torch."""
    from torch import nn
    return nn


@dataclass(frozen=True)
class Op:
    name: str
    doc: str
    convolves: bool  # has weights and an `out` width (conv, head, fconv, sconv)
    unit: bool  # followed by ReLU and BatchNorm (in the spec's order) and Dropout, unless linear
    kernels: tuple[int, ...]  # kernel sizes allowed (() for pools)
    downsamples: bool  # ends a block in the notes' words (a pool, or a strided conv in its place)
    weights: Callable  # (layer, cin) -> convolution weights (biases and BN apart)
    convs: Callable  # (layer, cin, bias, copies) -> [nn.Module]: the op's convolutions (or pool), for
    # `copies` independent models side by side: channels and groups times copies (search.stacked)
    out_size: Callable  # (layer, n) -> side length after the op
    rf_step: Callable  # (layer, n) -> (kernel, stride, padding) as the RF table sees the op
    word: Callable  # (layer) -> its token in a note's block ("8", "8f", "8/2")
    legend: str = ""  # how a note explains the op's word, once per description ("" for the plain ones)
    grouped: bool = False  # its convolutions take `groups`
    linear: bool = False  # may skip its ReLU/BN/Dropout (`linear`)

    def params(self, layer, *, cin: int, batchnorm: bool, bias: bool) -> int:
        """Trainable parameters of this layer given its input channels."""
        if not self.convolves:
            return 0
        n = self.weights(layer, cin) + (self.bias_count(layer) if bias else 0)
        if self.unit and batchnorm and not layer.linear:
            n += 2 * layer.out  # BatchNorm weight and bias
        return n

    def bias_count(self, layer) -> int:
        return 2 * layer.out if self.name == "fconv" else layer.out  # fconv: two convolutions, each biased

    def build(self, layer, *, cin: int, bias: bool, batchnorm: bool, order: str, dropout: float,
              make_dropout: Callable, copies: int = 1, activation: str = "relu") -> list:
        """The op's modules. copies > 1: that many models' layers as one, each model's channels a
        contiguous block (model-major) that grouped convolutions and per-channel BatchNorm keep apart."""
        mods = self.convs(layer, cin, bias, copies)
        if self.unit and not layer.linear:
            nn = _nn()
            unit = [getattr(nn, ACTIVATIONS[activation])()] + ([nn.BatchNorm2d(layer.out * copies)] if batchnorm else [])
            mods += unit if order == "relu-bn" else unit[::-1]
            if dropout > 0:
                mods.append(make_dropout(dropout))
        return mods


def _conv_size(layer, n: int, stride: int = 1) -> int:
    return (n + 2 * layer.padding - layer.kernel) // stride + 1


def _same(layer, n):
    return n


OPS: dict[str, Op] = {op.name: op for op in (
    Op("conv", "kernel x kernel convolution (stride 1) to `out` channels; `groups` splits the channels "
               "(depthwise when groups = in = out); `linear`: no ReLU/BN/Dropout after it",
       convolves=True, unit=True, kernels=(1, 3), downsamples=False,
       weights=lambda l, cin: l.kernel * l.kernel * (cin // l.groups) * l.out,
       convs=lambda l, cin, bias, c: [_nn().Conv2d(cin * c, l.out * c, l.kernel, padding=l.padding,
                                                   groups=l.groups * c, bias=bias)],
       out_size=_conv_size, rf_step=lambda l, n: (l.kernel, 1, l.padding),
       word=lambda l: str(l.out) + (f" (groups {l.groups})" if l.groups > 1 else ""), grouped=True, linear=True),
    # The public 3,197-parameter design's convolution: 3x1 then 1x3 (Inception v3's factorisation),
    # 3*C*W + 3*W*W weights instead of 9*C*W; the pair sees a 3x3 window. One ReLU/BN after the pair.
    # With groups = in = out it is a factorized depthwise 3x3: 6*C weights instead of 9*C, where a
    # separable net under 3,000 parameters spends about a third of them on depthwise 3x3s
    # (experiments/design-check's base: 945 of 2,999); `linear` as for conv.
    Op("fconv", "factorized 3x3: a 3x1 convolution to `out` channels, then a 1x3 one, then ReLU/BN; "
                "`groups` splits both (depthwise when groups = in = out); `linear`: no ReLU/BN/Dropout after it",
       convolves=True, unit=True, kernels=(3,), downsamples=False,
       weights=lambda l, cin: 3 * (cin // l.groups) * l.out + 3 * (l.out // l.groups) * l.out,
       convs=lambda l, cin, bias, c: [_nn().Conv2d(cin * c, l.out * c, (3, 1), padding=(l.padding, 0), groups=l.groups * c, bias=bias),
                                      _nn().Conv2d(l.out * c, l.out * c, (1, 3), padding=(0, l.padding), groups=l.groups * c, bias=bias)],
       out_size=_conv_size, rf_step=lambda l, n: (3, 1, l.padding),
       word=lambda l: f"{l.out}f" + (f" (groups {l.groups})" if l.groups > 1 else ""),
       legend="12f: factorized, a 3x1 then a 1x3", grouped=True, linear=True),
    # In place of a max-pool: a 3x3 convolution with stride 2 learns its downsampling (public
    # designs under 4K use it); pad 1 maps 28 -> 14 -> 7 -> 4, pad 0 maps 28 -> 13 -> 6 -> 2.
    Op("sconv", "strided 3x3: a 3x3 convolution with stride 2 to `out` channels (a learnt pool), then ReLU/BN",
       convolves=True, unit=True, kernels=(3,), downsamples=True,
       weights=lambda l, cin: 9 * cin * l.out,
       convs=lambda l, cin, bias, c: [_nn().Conv2d(cin * c, l.out * c, 3, stride=2, padding=l.padding, groups=c, bias=bias)],
       out_size=lambda l, n: _conv_size(l, n, 2), rf_step=lambda l, n: (3, 2, l.padding),
       word=lambda l: f"{l.out}/2", legend="12/2: stride 2, in place of a max-pool"),
    Op("maxpool", "2x2 max-pool, stride 2", convolves=False, unit=False, kernels=(), downsamples=True,
       weights=lambda l, cin: 0, convs=lambda l, cin, bias, c: [_nn().MaxPool2d(2, 2)],
       out_size=lambda l, n: n // 2, rf_step=lambda l, n: (2, 2, 0), word=lambda l: "pool"),
    Op("gap", "global average pooling over whatever spatial size arrives", convolves=False, unit=False,
       kernels=(), downsamples=True, weights=lambda l, cin: 0,
       convs=lambda l, cin, bias, c: [_nn().AdaptiveAvgPool2d(1)], out_size=lambda l, n: 1,
       rf_step=lambda l, n: (n, 1, 0), word=lambda l: "GAP"),
    Op("head", "kernel x kernel convolution to the classes; no ReLU/BN/Dropout, its output is the logits",
       convolves=True, unit=False, kernels=(1, 3), downsamples=False,
       weights=lambda l, cin: l.kernel * l.kernel * (cin // l.groups) * l.out,
       convs=lambda l, cin, bias, c: [_nn().Conv2d(cin * c, l.out * c, l.kernel, padding=l.padding,
                                                   groups=l.groups * c, bias=bias),
                                      _nn().Flatten()],
       out_size=_conv_size, rf_step=lambda l, n: (l.kernel, 1, l.padding), word=lambda l: f"{l.out}", grouped=True),
)}
