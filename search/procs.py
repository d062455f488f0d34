"""The processes that train (search workers, the seeds of confirm and verify): forked from one
server process per run that has imported torch and the training code once, so each starts in a
moment instead of importing torch anew (2.5-3 s of CPU each on this machine: `python -X importtime
-c "import search.train"`); `find` starts one process per seed.

The server is multiprocessing's "forkserver": a fresh interpreter, started when the first process
is asked for, that has run nothing but imports, so forking it is safe (no CUDA context, no lock
held; torch's import leaves one idle thread). It ignores Ctrl-C (multiprocessing's rule), blocks
SIGTERM (search/_forkserver.py), and ends when its parent does: were a signal to the process group
to end it first, the parent would read every running child as ended (exit code 255) while they
still finish their trials. Its children start with the signal handlers a spawned process would
have: a signal the parent ignores stays ignored (exec keeps SIG_IGN; pytest-xdist's workers ignore
Ctrl-C), every other is the default, SIGTERM unblocked (tests/test_legs.py compares the two); they
run in the parent's process group, with the parent's environment and working directory as
they were when the first child started (the device is chosen, and $MNIST_NAS_DEVICE set, before).
"""
from __future__ import annotations

import multiprocessing as mp

# what the server imports before its first fork; search._forkserver first (its signal mask).
# torch._dynamo: an optimizer's constructor imports it (torch._disable_dynamo), 2.15 s on this
# machine (2026-11-30, `python -c "import torch; torch.optim.SGD(torch.nn.Linear(3, 2).parameters())"`),
# once in every process that trains
PRELOAD = ["search._forkserver", "torch", "torch._dynamo", "search.train", "search.retrain", "search.runner",
           "search.race"]


def context():
    """The multiprocessing context every training process is started from."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx
