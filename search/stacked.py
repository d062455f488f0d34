"""Many seeds of one model trained as one network: the batched path for a GPU (issue 24, part 5).

`copies` models of the same spec and recipe become one nn.Sequential (space.model.build_model with
copies): every convolution's channels and groups times copies, so model i owns the i-th block of
channels of every layer, and per-channel BatchNorm, elementwise SGD (momentum, weight decay) and
the elementwise weight average keep the blocks apart exactly. Each model still sees its own
batches: the images of all copies go in as channels of one input (model i's image is input
channel i), so one kernel launch trains every copy.

Slot i is seed seeds[i]'s own run, not a new kind of seed: its initial weights are drawn as
`train(seed=s)` draws them (torch.manual_seed(s), then build_model), its shuffles and augmentation
come from its own generator seeded s in train()'s order. What differs is the arithmetic's order
(a grouped convolution sums as it likes), so a slot follows its lone run to rounding, not bit for
bit (tests/test_stacked.py measures it), and dropout masks, which come from torch's global
generator, are drawn for all copies at once.

>>> from space.spec import ArchSpec, Layer
>>> spec = ArchSpec(name="t", layers=(Layer("conv", out=4), Layer("maxpool"), Layer("gap"),
...                 Layer("head", out=10, kernel=1)))
>>> model = build_model(spec, copies=3)
>>> model(torch.zeros(2, 3, 28, 28)).shape  # three models' logits side by side
torch.Size([2, 30])
>>> one = unstack_model(model, spec, 1, copies=3)
>>> sum(p.numel() for p in one.parameters()) == count_params(spec)
True
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from space.model import build_model, normalise, prepare
from space.recipe import TrainConfig
from space.spec import ArchSpec, count_params
from search import stopping
from search.data import Split
from search.device import describe as describe_device, resolve as resolve_device
from search.train import TrainResult, affine_apply, affine_theta, training_inputs, training_memory_format


def stack_states(states: list[dict]) -> dict:
    """One stacked state from the copies' own (model i's tensors become block i of dim 0). Scalars
    (BatchNorm's num_batches_tracked) are shared: every copy takes the same number of steps."""
    return {k: (torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k].clone())
            for k in states[0]}


def unstack_state(state: dict, index: int, copies: int) -> dict:
    """Model `index`'s own state out of a stacked one."""
    out = {}
    for k, v in state.items():
        if v.dim():
            n = v.shape[0] // copies
            v = v[index * n:(index + 1) * n]
        out[k] = v.detach().clone()
    return out


def unstack_model(stacked: nn.Module, spec: ArchSpec, index: int, *, copies: int, dropout: float = 0.0,
                  pooled_dropout: bool = True) -> nn.Sequential:
    """Model `index` as a plain build_model(spec) network (CPU, default layout): what a lone run returns."""
    model = build_model(spec, dropout=dropout, pooled_dropout=pooled_dropout)
    state = {k: v.to("cpu").contiguous() for k, v in stacked.state_dict().items()}
    model.load_state_dict(unstack_state(state, index, copies))
    return model


def stacked_inputs(x: torch.Tensor, copies: int) -> torch.Tensor:
    """(copies * b, 1, H, W), model-major, -> (b, copies, H, W): model i's images as channel i."""
    return x.view(copies, -1, *x.shape[2:]).squeeze(2).transpose(0, 1)


def per_copy(logits: torch.Tensor, copies: int) -> torch.Tensor:
    """(b, copies * classes) -> (copies, b, classes)."""
    return logits.view(logits.shape[0], copies, -1).transpose(0, 1)


@torch.inference_mode()
def evaluate_stacked(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, copies: int,
                     batch_size: int = 500) -> list[tuple[float, float]]:
    """(mean loss, accuracy %) of every copy on the same uint8 images (space.model.evaluate, per copy)."""
    model.eval()
    dev = images.device
    loss = torch.zeros(copies, device=dev)
    correct = torch.zeros(copies, dtype=torch.long, device=dev)
    for i in range(0, len(labels), batch_size):
        x = normalise(prepare(images[i:i + batch_size]))
        y = labels[i:i + batch_size]
        out = per_copy(model(x.expand(-1, copies, -1, -1)), copies).float()  # (copies, b, classes)
        loss += F.cross_entropy(out.transpose(1, 2), y.expand(copies, -1), reduction="none").sum(1)
        correct += (out.argmax(2) == y).sum(1)
    n = max(len(labels), 1)
    return [(l / n, 100.0 * c / n) for l, c in zip(loss.tolist(), correct.tolist())]


def train_stacked(spec: ArchSpec, cfg: TrainConfig, split: Split, seeds: list[int], *,
                  on_epoch: Callable[[list[dict]], None] | None = None,
                  log: Callable[[str], None] | None = None) -> list[TrainResult]:
    """train(spec, cfg with seed s, split) for every s in seeds, as one network; one TrainResult per
    seed, in order, each model on the CPU. on_epoch(records) hears every copy's epoch record after
    each epoch ("seconds" is the whole stack's epoch). cfg.seed is ignored: seeds say them."""
    copies = len(seeds)
    if copies < 1 or len(set(seeds)) != copies:
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device()
    # each copy's draws, in train()'s order: weights first (global generator), then from its own
    # generator the shuffles and, on the CPU, the augmentation (on a GPU, a generator there)
    states = []
    for s in seeds:
        torch.manual_seed(s)
        states.append(build_model(spec, dropout=cfg.dropout, pooled_dropout=cfg.pooled_dropout).state_dict())
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    aug_gens = gens if device.type == "cpu" else [torch.Generator(device=device).manual_seed(s) for s in seeds]
    model = build_model(spec, dropout=cfg.dropout, pooled_dropout=cfg.pooled_dropout, copies=copies)
    model.load_state_dict(stack_states(states))
    # channels_last on the CPU: oneDNN's grouped convolutions are the fast ones in NHWC (train.py's
    # training_memory_format); a stack is grouped throughout, and one copy is train()'s own case
    # (2026-11-30: one copy of under3762 in the default layout took 49 s an epoch beside another)
    memory_format = (torch.channels_last if copies > 1 and device.type == "cpu"
                     else training_memory_format(spec, device))
    model = model.to(device, memory_format=memory_format)
    x_all, y_all, eval_images, eval_labels, updates, augment, autocast = training_inputs(model, cfg, split, device)
    n = len(y_all)
    where = describe_device(device)
    results = [TrainResult(None, spec, dataclasses.replace(cfg, seed=s), split.eval_name, device=where) for s in seeds]
    ev = split.eval_name
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        lr = updates.lr
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (copies, n)
        loss_sum = torch.zeros(copies, device=device)
        correct = torch.zeros(copies, dtype=torch.long, device=device)
        for i in range(0, n, cfg.batch_size):
            stopping.check()
            idx = perms[:, i:i + cfg.batch_size]  # (copies, b): each copy's own batch
            b = idx.shape[1]
            x, y = prepare(x_all[idx.reshape(-1)]), y_all[idx]
            if augment:
                theta = torch.cat([affine_theta(b, g, rotation=cfg.rotation, shift=cfg.shift, scale=cfg.scale)
                                   for g in aug_gens])
                x = affine_apply(x, theta, cfg.fill)
            with autocast:
                out = per_copy(model(stacked_inputs(normalise(x), copies).contiguous(memory_format=memory_format)),
                               copies)  # (copies, b, classes)
                losses = F.cross_entropy(out.transpose(1, 2), y, reduction="none",
                                         label_smoothing=cfg.label_smoothing)  # (copies, b)
            # the sum of each copy's mean loss: every copy's weights get its own run's gradient
            updates.step(losses.mean(1).sum())
            loss_sum += losses.detach().sum(1)
            correct += (out.detach().argmax(2) == y).sum(1)
        lr_end = updates.lr
        updates.end_epoch()
        scores = evaluate_stacked(updates.scored, eval_images, eval_labels, copies)
        seconds = time.perf_counter() - t0
        records = []
        for r, (ev_loss, ev_acc), ls, c in zip(results, scores, loss_sum.tolist(), correct.tolist()):
            rec = {"epoch": epoch, "lr": lr, "lr_end": lr_end, "train_loss": ls / n, "train_acc": 100.0 * c / n,
                   f"{ev}_loss": ev_loss, f"{ev}_acc": ev_acc, "seconds": seconds}
            r.history.append(rec)
            records.append(rec)
        if log:
            log(f"epoch {epoch:>2} {seconds:6.1f}s  {ev}_acc " + " ".join(f"{r[f'{ev}_acc']:.2f}" for r in records))
        if on_epoch:
            on_epoch(records)
    for i, r in enumerate(results):
        r.model = unstack_model(updates.scored, spec, i, copies=copies, dropout=cfg.dropout, pooled_dropout=cfg.pooled_dropout)
    return results

