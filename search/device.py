"""Where training runs: the CPU (default) or a CUDA GPU, named by --device or $MNIST_NAS_DEVICE.

An execution setting, not part of a recipe: the same trial trains on either, so it is kept out of
TrainConfig (a stored recipe must not send a CPU-only verify to a GPU). The environment variable
is the one carrier, because search and verify run their training in worker processes
(search/procs.py), which inherit it; study.py's --device only checks the name and sets it.

On a GPU the runs are not bit-for-bit repeatable (cuDNN's convolution backward sums in a varying
order) and differ numerically from the CPU's: each trial and verify row records where it ran.

>>> resolve("cpu")
device(type='cpu')
>>> resolve("tpu")
Traceback (most recent call last):
...
space.recipe.ConfigError: --device must be cpu, cuda or cuda:N, got 'tpu'
"""
from __future__ import annotations

import os
import re

from space.recipe import ConfigError

DEVICE_ENV = "MNIST_NAS_DEVICE"
_NAME = re.compile(r"cpu|cuda(:\d{1,2})?")


def resolve(name: str | None = None):
    """torch.device for a name (None: $MNIST_NAS_DEVICE, else "cpu"); ConfigError, one line, when
    the name is malformed or names a GPU this machine does not have."""
    import torch
    name = (name if name is not None else os.environ.get(DEVICE_ENV, "")).strip() or "cpu"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def select(name: str) -> None:
    """Check a --device name and make it the one every training run of this process and its
    workers uses."""
    resolve(name)
    os.environ[DEVICE_ENV] = name


def describe(device) -> str:
    """What a trial or verify row records: "cpu", or "cuda (NVIDIA H100 80GB HBM3)"."""
    import torch
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"
