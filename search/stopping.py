"""Stopping on Ctrl-C or SIGTERM without tearing a storage write in half.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be,
inside a SQLAlchemy transaction too. Two things then went wrong (CI, a SIGTERM to a 2-worker
search): a SQLite connection cut off mid-write kept its lock, so the other worker's writes failed
with "database is locked"; and raised inside Optuna's tell, the storage error replaced the
KeyboardInterrupt, so the worker took it for a server outage and waited for it, forever.

So a signal only sets a flag, and the code stops where stopping is safe: every training batch
(train() calls check()), every wait between trials (sleep()), the parent waiting for its workers.
A stop asked for during a storage write takes effect right after it. A second signal changes
nothing: the clean-up (the running trial marked FAIL, the parent waiting) runs once.

    >>> import os, signal
    >>> install()
    >>> os.kill(os.getpid(), signal.SIGTERM); requested()
    True
    >>> try:
    ...     check()
    ... except KeyboardInterrupt:
    ...     print("stopped")
    stopped
    >>> reset()
"""
from __future__ import annotations

import signal
import time

_requested = False
_cause = "Ctrl-C"


def _on_signal(signum, frame) -> None:
    global _requested, _cause
    _requested = True
    _cause = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def install() -> None:
    """Ctrl-C and SIGTERM ask for a stop; also when started in the background (`cmd &` starts a
    program with SIGINT ignored, so a later `kill -INT` would otherwise do nothing)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def reset() -> None:
    """Forget a stop request and give the signals back to Python (tests, and the doctest above)."""
    global _requested, _cause
    _requested, _cause = False, "Ctrl-C"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def requested() -> bool:
    return _requested


def cause() -> str:
    """What asked for the stop, for the closing line: "Ctrl-C" (SIGINT) or "SIGTERM"."""
    return _cause


def check() -> None:
    """Raise KeyboardInterrupt if a stop was asked for: call only where no storage write is open."""
    if _requested:
        raise KeyboardInterrupt


def sleep(seconds: float) -> None:
    """time.sleep that ends early, with KeyboardInterrupt, when a stop is asked for."""
    end = time.monotonic() + seconds
    while True:
        check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))
