import codecs
import os
import selectors
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fixtures whose tests are the slow tier: they start the CLI as a process, or need the real data.
SLOW_FIXTURES = {"cli", "real_root", "real_mnist"}


def pytest_collection_modifyitems(config, items):
    """Every test that uses a slow fixture (directly or through another fixture) is marked `slow`,
    so a new CLI test cannot land in the fast tier by forgetting a marker.

    CI runs the tests in two processes (`pytest -n 2 --dist loadfile`, pytest-xdist): a file's
    tests stay in one process, so a module fixture (a study several tests read) is made once, and
    the tests marked `postgresql`, all in tests/test_scale.py, run one at a time (one of them
    restarts the server under running workers)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class CLI:
    """study.py run as a user runs it: a fresh interpreter per command, output captured as text.

    cli(*args, cwd=None, check=True, timeout=600, env=None) runs one command to its end and returns
    the CompletedProcess; with check, a non-zero exit fails the test with the command's output.
    env is added to this process's environment. cli.popen(*args, cwd=None, env=None, **popen_kw)
    starts one and returns the Popen (stdout and stderr piped as text unless popen_kw says otherwise).
    """

    def argv(self, *args) -> list[str]:
        return [sys.executable, str(ROOT / "study.py"), *map(str, args)]

    def __call__(self, *args, cwd=None, check=True, timeout=600, env=None) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **env} if env else None)
        if check and r.returncode != 0:
            raise AssertionError(f"{args} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def popen(self, *args, cwd=None, env=None, **popen_kw) -> subprocess.Popen:
        kw = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) | popen_kw
        return subprocess.Popen(self.argv(*args), cwd=cwd, env={**os.environ, **env} if env else None, **kw)


@pytest.fixture(scope="session")
def cli() -> CLI:
    """The one CLI runner (see CLI); a test that uses it is in the slow tier."""
    return CLI()


def _died(proc, what: str, seen: str = "") -> AssertionError:
    try:
        out, err = proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        out, err = "", ""
    return AssertionError(f"the child exited ({proc.returncode}) before {what}\n"
                          f"--- stdout\n{(seen + (out or ''))[-4000:]}\n--- stderr\n{(err or '')[-4000:]}")


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, interval: float = 0.1,
             what: str = "the condition"):
    """Poll predicate() until it returns something true, and return that. Fails at once, with the
    child's output, if proc has exited meanwhile; fails after timeout seconds otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise _died(proc, what)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(interval)


def read_lines_until(proc: subprocess.Popen, predicate, timeout: float, what: str = "the line awaited") -> list[str]:
    """Read proc's stdout line by line until predicate(lines so far) is true; return the lines.
    Fails at once, with the child's output, when its stdout ends (it exited: nothing more can
    come), and after timeout seconds even while a silent child lives. Reads the pipe below
    Python's buffer, so a later proc.communicate() gets the rest."""
    fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines, partial = [], ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not seen within {timeout:.0f} s\n" + "".join(lines)[-4000:])
            if not sel.select(timeout=min(left, 1.0)):
                continue
            data = os.read(fd, 65536)
            if not data:
                raise _died(proc, what, "".join(lines) + partial)
            *whole, partial = (partial + decoder.decode(data)).split("\n")
            for line in whole:
                lines.append(line + "\n")
                if predicate(lines):
                    return lines


def session_alive(sid: int) -> list[int]:
    """The live (not zombie) processes of session sid: a child started with start_new_session and
    everything it started, unless they left the session."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] not in "ZX":
            alive.append(int(stat.parent.name))
    return alive


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None):
    """Write an IDX file as MNIST stores it (big-endian header, uint8 payload)."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


def make_tiny_mnist(root: Path, n_train: int = 120, n_test: int = 30, seed: int = 0) -> Path:
    """A tiny, learnable MNIST-shaped dataset: each class is a bright bar at its own row."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 3 + 2 * c: 5 + 2 * c, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def tiny_root(tmp_path):
    return make_tiny_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def real_root():
    root = os.environ.get("MNIST_DATA_DIR")
    if not root or not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real MNIST not given (set MNIST_DATA_DIR)")
    return Path(root)


@pytest.fixture(scope="session")
def real_mnist(real_root):
    from search.data import load_mnist
    return load_mnist(real_root, download=False)
