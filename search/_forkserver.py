"""Preloaded by the fork server, first (search/procs.py's PRELOAD). In the server, and only there,
it blocks SIGTERM, so a signal to the whole process group leaves the server alive to report its
children's exits, and has every child it forks unblock SIGTERM at once (os.register_at_fork), so
Process.terminate() and a `kill` end a child as they end a spawned process. Blocked, not ignored:
a SIGTERM sent between the fork and the unblocking waits, pending, and ends the child then
(ignored, it was lost: terminate() right after start() left the child running in 2 of 3 runs of
tests/test_legs.py). First in PRELOAD because a thread inherits the mask of the thread that starts
it, and torch's import starts one. Imported anywhere else (the doctest runner imports every module)
it does nothing: a process that blocked SIGTERM would never hear it."""
import os
import signal
import sys


def _in_fork_server() -> bool:
    """True while multiprocessing.forkserver.main imports its preload modules (this one among them)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "multiprocessing.forkserver" and frame.f_code.co_name == "main":
            return True
        frame = frame.f_back
    return False


if _in_fork_server():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.register_at_fork(after_in_child=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}))
