"""A hand-written 2x2 max-pool against F.max_pool2d, forward+backward, one thread (docs/performance.md:
tried and dropped). Both variants give values and gradients identical to
max_pool2d's (checked below, ties included); both are slower on this CPU.
Run: .venv/bin/python experiments/pool-variants/pool-variants.py"""
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)


class MaskPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        a, b = x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]
        c, d = x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]
        y = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        # which of the four gets the gradient: the first maximum in row-major order, as max_pool2d
        ia = a == y
        ib = (b == y) & ~ia
        ic = (c == y) & ~(ia | ib)
        ctx.save_for_backward(ia, ib, ic)
        ctx.shape = x.shape
        return y

    @staticmethod
    def backward(ctx, g):
        ia, ib, ic = ctx.saved_tensors
        zero = g.new_zeros(())
        ga = torch.where(ia, g, zero); gb = torch.where(ib, g, zero); gc = torch.where(ic, g, zero)
        gd = torch.where(ia | ib | ic, zero, g)
        n, c_, hh, ww = g.shape
        blocks = torch.stack([ga, gb, gc, gd], -1).view(n, c_, hh, ww, 2, 2).permute(0, 1, 2, 4, 3, 5)
        gx = blocks.reshape(n, c_, 2 * hh, 2 * ww)
        H, W = ctx.shape[-2:]
        if (H, W) != (2 * hh, 2 * ww):
            gx = F.pad(gx, (0, W - 2 * ww, 0, H - 2 * hh))
        return gx


class WindowPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        n, c, H, W = x.shape
        h, w = H // 2, W // 2
        xs = x[..., :2 * h, :2 * w] if (H % 2 or W % 2) else x
        win = xs.reshape(n, c, h, 2, w, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w, 4)
        y, idx = win.max(-1)
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return y
    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        n, c, h, w = g.shape
        gw = g.new_zeros(n, c, h, w, 4).scatter_(-1, idx.unsqueeze(-1), g.unsqueeze(-1))
        gx = gw.view(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)
        H, W = ctx.shape[-2:]
        if (H, W) != (2 * h, 2 * w):
            gx = F.pad(gx, (0, W - 2 * w, 0, H - 2 * h))
        return gx


def ms(f, x, n=50):
    for _ in range(5):
        y = f(x); y.backward(torch.ones_like(y))
    t = time.perf_counter()
    for _ in range(n):
        y = f(x); y.backward(torch.ones_like(y))
    return (time.perf_counter() - t) / n * 1e3


for shape in [(64, 16, 28, 28), (64, 12, 28, 28), (64, 14, 14, 14), (64, 10, 24, 24)]:
    x = torch.randn(*shape, requires_grad=True)
    print(shape, "fwd+bwd ms: max_pool2d %.2f  masks %.2f  window max %.2f" % (
        ms(lambda x: F.max_pool2d(x, 2, 2), x), ms(MaskPool.apply, x), ms(WindowPool.apply, x)))
for trial in range(20):
    torch.manual_seed(trial)
    H = 28 if trial % 2 else 25
    base = torch.randn(8, 5, H, H)
    if trial % 3 == 0: base = F.relu(base)
    if trial % 3 == 1: base = F.relu(base) * 0.7 - 0.3
    if trial % 5 == 0: base = torch.round(base)  # many ties
    g = torch.randn(8, 5, H // 2, H // 2)
    for pool in (MaskPool.apply, WindowPool.apply):
        x1, x2 = base.clone().requires_grad_(), base.clone().requires_grad_()
        y1, y2 = F.max_pool2d(x1, 2, 2), pool(x2)
        y1.backward(g); y2.backward(g)
        assert torch.equal(y1, y2) and torch.equal(x1.grad, x2.grad), trial
print("both variants: values and gradients identical to max_pool2d")
