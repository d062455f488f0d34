"""Imported only by the fork server, first (search/procs.py's PRELOAD). The server blocks SIGTERM,
so a signal to the whole process group leaves it alive to report its children's exits; every
child it forks unblocks SIGTERM at once (os.register_at_fork), so Process.terminate() and a `kill`
end it as they end a spawned process. Blocked, not ignored: a SIGTERM sent between the fork and
the unblocking waits, pending, and ends the child then (ignored, it was lost, and terminate()
right after start() left the child running; tests/test_legs.py caught it in 2 of 3 runs). First in
PRELOAD because a thread inherits the mask of the thread that starts it: torch's import starts one.
Never import this module anywhere else: the importing process would never hear SIGTERM."""
import os
import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
os.register_at_fork(after_in_child=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}))
