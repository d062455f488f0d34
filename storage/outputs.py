"""Where results leave: the one check of an output path a user names (-o, --onnx, --out, --plots),
made before any work, so that hours of training never end in a traceback at the write.

>>> import tempfile; d = Path(tempfile.mkdtemp())
>>> check_output(d / "new" / "m.pt2", what="-o", suffixes=(".pt2",)).name
'm.pt2'
>>> check_output(d / "m.onnx", what="-o", suffixes=(".pt2",))
Traceback (most recent call last):
...
storage.db.StudyError: -o must name a .pt2 file, got ...m.onnx
"""
from __future__ import annotations

import os
from pathlib import Path

from storage.db import StudyError

# what `front -o` may write: matplotlib picks the format by the suffix (others: one error line)
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_output(path, *, what: str, suffixes: tuple[str, ...] = (), folder: bool = False) -> Path:
    """`path` as a Path if it can be written as a file (a folder with folder=True), else StudyError
    in one line: a suffix not in `suffixes`, a folder where a file is asked (or a file where a
    folder is), a parent that is a file or cannot be written in, a name the filesystem refuses
    (too long). Missing parent folders are fine: the writer makes them."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise StudyError(f"{what} must name a {' or '.join(suffixes)} file, got {p}")
    try:
        if folder and p.exists() and not p.is_dir():
            raise StudyError(f"{what}: {p} is a file; give a folder")
        if not folder and p.is_dir():
            raise StudyError(f"{what}: {p} is a folder; give a file name")
        existing = p if folder else p.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise StudyError(f"{what}: cannot write {p}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK) or (p.is_file() and not os.access(p, os.W_OK)):
            raise StudyError(f"{what}: cannot write {p}: permission denied")
    except OSError as e:  # a name too long, an I/O error
        raise StudyError(f"{what}: cannot write {p}: {e.strerror or type(e).__name__}") from None
    return p
