"""A stand-in for training in search.race's job processes (tests/test_legs.py): imports nothing, so a
spawned process starts in a moment even on a loaded machine."""


def fake_seed(job, conn):
    """Trial 5's seed 1 ends at once below the bar; every other seed sleeps 600 s unless ended."""
    import time
    trial, seed = job[0], job[3]
    if (trial, seed) != (5, 1):
        time.sleep(600)
    conn.send(("ok", (trial, seed, [99.0 if trial == 5 else 99.5], 0.5, "cpu")))


def report_start(conn):
    """What a training process finds when it starts (tests/test_race.py): its signal handlers and
    whether torch came preloaded from the fork server (this module imports nothing)."""
    import signal
    import sys
    name = lambda h: getattr(h, "__name__", None) or signal.Handlers(h).name
    import os
    conn.send({"sigterm": name(signal.getsignal(signal.SIGTERM)), "sigint": name(signal.getsignal(signal.SIGINT)),
               "blocked": signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []), "parent": os.getppid(),
               "preloaded": sorted(m for m in ("torch", "torch._dynamo", "search.train") if m in sys.modules)})


def dying_seed(job, conn):
    """A training process that dies without a word (as the kernel's OOM killer leaves it): trial 5's
    seed 1 exits with code 3 at once; every other seed sleeps 600 s unless ended."""
    import os
    import time
    if (job[0], job[3]) == (5, 1):
        os._exit(3)
    time.sleep(600)
