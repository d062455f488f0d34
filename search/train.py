"""The one training loop: a single run, every trial of a study, and verification all call train().

The dataset is in memory as uint8; each batch is gathered, scaled to [0, 1], rotated/shifted/zoomed
(vectorised, one draw per image) and normalised on the fly, in the style of airbench. The rate
recorded per epoch is the one its first batch used ("lr") and the one in force when it ended
("lr_end"), so a OneCycle schedule, stepped per batch, shows in the epoch table too.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from space.model import build_model, evaluate, normalise, prepare
from space.recipe import ConfigError, TrainConfig  # re-exported: callers import them from here
from space.spec import ArchSpec, count_params
from space.target import EPOCH_LIMIT
from search import stopping
from search.data import Split
from search.device import describe as describe_device, resolve as resolve_device

@dataclass
class TrainResult:
    model: nn.Module
    spec: ArchSpec
    config: TrainConfig
    eval_name: str  # "val" or "test"
    history: list[dict] = field(default_factory=list)  # one record per epoch
    device: str = "cpu"  # where it trained (search.device.describe)

    @property
    def params(self) -> int:
        return count_params(self.spec)

    def accs(self) -> list[float]:
        return [h[f"{self.eval_name}_acc"] for h in self.history]

    def last_k_min(self, k: int) -> float:
        return min(self.accs()[-k:])

    def to_json_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "params": self.params, "config": self.config.to_dict(),
                "eval_name": self.eval_name, "device": self.device, "epochs": self.history}


def affine_batch(x: torch.Tensor, gen: torch.Generator, *, rotation: float = 0.0, shift: float = 0.0,
                 scale: float = 0.0, fill: float = 0.0) -> torch.Tensor:
    """Rotate, shift and scale every image of x (N, 1, H, W) by its own random draw, in one
    affine_grid/grid_sample call: angle uniform in [-rotation, rotation] degrees, translation
    uniform in [-shift, shift] of the image side per axis, zoom uniform in [1 - scale, 1 + scale].
    What the transform uncovers is filled with `fill`."""
    return affine_apply(x, affine_theta(x.shape[0], gen, rotation=rotation, shift=shift, scale=scale), fill)


def affine_theta(n: int, gen: torch.Generator, *, rotation: float, shift: float, scale: float) -> torch.Tensor:
    """affine_batch's draws for n images, as (n, 2, 3) matrices; search.stacked draws each model's
    from that model's own generator, so a stacked model sees the augmentation its lone run would."""
    dev = gen.device  # draws come from gen, on gen's device (x's, on a GPU)
    angle = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * math.radians(rotation)
    zoom = 1 + (torch.rand(n, generator=gen, device=dev) * 2 - 1) * scale
    move = (torch.rand(n, 2, generator=gen, device=dev) * 2 - 1) * (2 * shift)  # grid coordinates span 2 per side
    # theta maps output to input coordinates: the inverse zoom, then the rotation, then the shift
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    return torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)


def affine_apply(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with zeros; shifting by the fill makes the padding equal the fill.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def rotate_batch(x: torch.Tensor, degrees: float, fill: float, gen: torch.Generator) -> torch.Tensor:
    """Rotation only (kept for callers and tests of the rotation alone)."""
    return affine_batch(x, gen, rotation=degrees, fill=fill)


def ema_decay(t: int, decay: float) -> float:
    """The decay of the t-th update of the weight average (t = 0 copies): min(decay, (1 + t) / (10 + t)).
    Why the warm-up: a plain 0.999 still gives the initial weights 46 % of the average after one
    epoch of 782 steps, 4 % after four; in find-4k-sep (results/find-4k-sep.run1.log) trials with
    ema 0.999 scored 9-34 % on validation at epoch 4 while training at 79-92 %, and the pruner, which
    then judged from epoch 4 (now epoch 2: search/config.py), cut them. With the warm-up the average follows the live weights early
    (decay 0.99 at step 890) and reaches the full decay only after ~9,000 steps."""
    return min(decay, (1 + t) / (10 + t))


def _ema_update(decay_now: dict):
    """AveragedModel's multi_avg_fn with the decay read per call from decay_now["decay"] (set by
    train() before each update): torch's get_ema_multi_avg_fn with a moving decay."""
    @torch.no_grad()
    def update(ema_params, live_params, _n_averaged):
        d = decay_now["decay"]
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, live_params, 1 - d)
        else:  # integer buffers (BN's num_batches_tracked), as torch's own EMA function does
            for e, p in zip(ema_params, live_params):
                e.copy_(e * d + p * (1 - d))
    return update


def training_memory_format(spec: ArchSpec, device: torch.device) -> torch.memory_format:
    """channels_last for a spec with grouped (depthwise) convolutions on the CPU, else the default.

    Why: oneDNN's depthwise 3x3 is far faster in NHWC here. experiments/layout-variants (one thread,
    batch 64, forward+backward+step; commit e965cd5, 2026-11-28, two rounds): find-4k-sep trial 28
    (3,917 params, separable) 1,881 / 1,595 img/s contiguous, 2,313 / 2,279 channels_last; the plain
    under5k and under8k were mixed (2,345 / 2,211 -> 2,473 / 2,652; 2,937 / 2,361 -> 2,589 / 2,558)
    and slower channels_last on an earlier day, so plain specs keep the default layout (and their
    runs stay repeatable as recorded). Not measured on a GPU, so GPUs keep the default.

    >>> from space.spec import ArchSpec, Layer
    >>> sep = ArchSpec(name="s", layers=(Layer("conv", out=4), Layer("conv", out=4, groups=4),
    ...                Layer("conv", out=8, kernel=1), Layer("gap"), Layer("head", out=10, kernel=1)))
    >>> training_memory_format(sep, torch.device("cpu")) == torch.channels_last
    True
    """
    grouped = any(layer.groups != 1 for layer in spec.layers)
    return torch.channels_last if grouped and device.type == "cpu" else torch.contiguous_format


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """(scheduler, per_batch): StepLR steps once per epoch, OneCycleLR once per batch."""
    if cfg.scheduler == "onecycle":
        total = cfg.epochs * steps_per_epoch
        if total < 4:  # too few steps for a cycle (tiny test data): hold the peak rate
            for group in opt.param_groups:
                group["lr"] = cfg.max_lr
            return None, False
        # OneCycleLR divides by the length of each phase: keep both at least 2 steps long (this only
        # ever moves pct_start for runs of a few dozen steps; a real epoch has hundreds)
        pct = min(max(cfg.pct_start, 2 / total), 1 - 2 / total)
        # cycle_momentum=False: the recipe's momentum is a sampled setting, not OneCycle's to override
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.max_lr, total_steps=total, pct_start=pct, cycle_momentum=False), True
    if cfg.scheduler == "step" and cfg.step_size:
        return torch.optim.lr_scheduler.StepLR(opt, cfg.step_size, cfg.gamma), False
    return None, False


class Updates:
    """The recipe's update rule, one home for train() and search.stacked: SGD with its momentum and
    weight decay, the schedule (stepped per batch or per epoch: make_scheduler), and the weight
    average with its warm-up (ema_decay: the first update copies, update t moves the average by
    1 - ema_decay(t, cfg.ema) towards the live weights; buffers too, so BN's statistics match the
    averaged weights). `scored` is what each epoch scores and a run returns."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
        self.model, self.ema = model, cfg.ema
        self._decay = {"decay": 0.0}
        self.averaged = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_update(self._decay),
                                                            use_buffers=True) if cfg.ema else None)
        self.scored = self.averaged.module if self.averaged is not None else model
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.sched, self.per_batch = make_scheduler(self.opt, cfg, steps_per_epoch)
        self.steps = 0

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        """One batch: the gradient of `loss`, the SGD step, the average's update, a per-batch schedule."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.averaged is not None:
            self._decay["decay"] = ema_decay(self.steps, self.ema)
            self.averaged.update_parameters(self.model)
        self.steps += 1
        if self.per_batch:
            self.sched.step()

    def end_epoch(self) -> None:
        """A per-epoch schedule (StepLR) steps here."""
        if self.sched and not self.per_batch:
            self.sched.step()


def _progress(iterable, quiet: bool, **kw):
    if quiet or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, leave=False, **kw)


class Progress:
    """What a caller's progress display hears from train(): a search worker's bar on a terminal."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self) -> None: ...

    def end_epoch(self, record: dict) -> None: ...


class Inputs(NamedTuple):
    """What one model's training (train) and a stack's (search.stacked) set up alike, once per run."""
    images: torch.Tensor        # the training images, uint8, on the device
    labels: torch.Tensor
    eval_images: torch.Tensor   # the split's scoring part (validation, or test for a final model)
    eval_labels: torch.Tensor
    updates: "Updates"
    augment: bool
    autocast: torch.autocast


def training_inputs(model: nn.Module, cfg: TrainConfig, split: Split, device: torch.device) -> Inputs:
    """Move the split to device once (uint8: 47 MB for all 60,000; on the CPU .to() is a no-op) and
    make the update rule, the augmentation switch and the bf16 context for model under cfg."""
    images, labels = split.train_images.to(device), split.train_labels.to(device)
    updates = Updates(model, cfg, steps_per_epoch=math.ceil(len(labels) / cfg.batch_size))
    # what bf16 covers is said once, at PRECISIONS (space/recipe.py); scoring runs outside this context
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    return Inputs(images, labels, split.eval_images.to(device), split.eval_labels.to(device), updates,
                  bool(cfg.rotation or cfg.shift or cfg.scale), autocast)


def train(spec: ArchSpec, cfg: TrainConfig, split: Split,
          on_epoch: Callable[[dict], None] | None = None,
          log: Callable[[str], None] | None = None, quiet: bool = False,
          progress: Progress | None = None) -> TrainResult:
    """Train spec under cfg on split. on_epoch(record) runs after every epoch and may raise
    (a pruner stops a trial that way); log(line) receives the epoch table; progress hears of every
    epoch and batch. It trains on search.device's device ($MNIST_NAS_DEVICE, default the CPU); the
    returned model is on the CPU either way."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device()
    torch.manual_seed(cfg.seed)  # weights and dropout masks (every device's generator)
    gen = torch.Generator().manual_seed(cfg.seed)  # shuffling and, on the CPU, augmentation draws
    # on a GPU the augmentation draws are made there: no host-to-device copy per batch
    aug_gen = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(cfg.seed)
    memory_format = training_memory_format(spec, device)
    model = build_model(spec, dropout=cfg.dropout, pooled_dropout=cfg.pooled_dropout).to(
        device, memory_format=memory_format)
    x_all, y_all, eval_images, eval_labels, updates, augment, autocast = training_inputs(model, cfg, split, device)
    n = len(y_all)
    result = TrainResult(model, spec, cfg, split.eval_name, device=describe_device(device))
    ev = split.eval_name
    if log:
        log(f"{'epoch':>5} {'lr':>8} {'train_loss':>10} {'train_acc':>9} {ev + '_loss':>10} "
            f"{ev + '_acc':>9} {'seconds':>7}")
    for epoch in _progress(range(1, cfg.epochs + 1), quiet, desc="epochs"):
        t0 = time.perf_counter()
        model.train()
        lr = updates.lr
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        batches = range(0, n, cfg.batch_size)
        if progress:
            progress.start_epoch(epoch, cfg.epochs, len(batches))
        for i in _progress(batches, quiet, desc=f"epoch {epoch}", unit="batch"):
            stopping.check()  # Ctrl-C / SIGTERM stop here, never inside a storage write
            idx = perm[i:i + cfg.batch_size]
            x, y = prepare(x_all[idx]), y_all[idx]
            if augment:
                x = affine_batch(x, aug_gen, rotation=cfg.rotation, shift=cfg.shift, scale=cfg.scale, fill=cfg.fill)
            with autocast:
                out = model(normalise(x).contiguous(memory_format=memory_format))
                loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            updates.step(loss)
            # accumulate as tensors: no .item() sync per batch
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            if progress:
                progress.step()
        lr_end = updates.lr
        updates.end_epoch()
        ev_loss, ev_acc, _ = evaluate(updates.scored, eval_images, eval_labels)
        rec = {"epoch": epoch, "lr": lr, "lr_end": lr_end, "train_loss": loss_sum.item() / n,
               "train_acc": 100.0 * correct.item() / n, f"{ev}_loss": ev_loss, f"{ev}_acc": ev_acc,
               "seconds": time.perf_counter() - t0}
        result.history.append(rec)
        if progress:
            progress.end_epoch(rec)
        if log:
            log(f"{epoch:>5} {lr:>8.4g} {rec['train_loss']:>10.4f} {rec['train_acc']:>9.2f} "
                f"{ev_loss:>10.4f} {ev_acc:>9.2f} {rec['seconds']:>7.1f}")
        if on_epoch:
            on_epoch(rec)
    # callers save, export and evaluate on the CPU, in the default layout
    result.model = updates.scored.to("cpu", memory_format=torch.contiguous_format)
    return result
