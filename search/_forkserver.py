"""Imported only by the fork server (search/procs.py's PRELOAD, first). The server ignores SIGTERM,
so a signal to the whole process group leaves it alive to report its children's exits; every
child it forks gets SIGTERM's default back at once (os.register_at_fork), so Process.terminate()
and a `kill` end it as they end a spawned process. Never import this module anywhere else: the
importing process would ignore SIGTERM."""
import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
