"""Checks a .pt2 model file handed to us before torch ever parses it.

Why: `torch.export.load` trusts its input. It unpickles members with full pickle in several places
(a legacy `data/weights/<model>.pt`, `use_pickle` weights and constants, `opaque_obj_*` constants,
and sample inputs when the weights-only unpickler refuses them), it resolves every graph node's
target by walking attributes from the `torch` module (so "torch.os.system" resolves), and it
parses symbolic shapes with sympy, which evaluates strings. Any of these runs an attacker's code.

So a file is accepted only if every member is one that `torch.export.save` writes for a plain
program, every payload is raw tensor bytes described by JSON (never a pickle), the sample inputs
load with torch's weights-only unpickler, every node calls an ATen operator, and every symbolic
expression is a plain size symbol. Anything else is refused with the member named.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

MAX_UNCOMPRESSED = 256 * 2**20  # our files are a few hundred KB; refuse zip bombs up front

_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_MEMBER = re.compile(
    r"^(models/(?P<model>[A-Za-z0-9_]+)\.json"
    r"|data/weights/[A-Za-z0-9_]+_weights_config\.json"
    r"|data/weights/weight_\d+"
    r"|data/constants/[A-Za-z0-9_]+_constants_config\.json"
    r"|data/constants/tensor_\d+"
    r"|data/sample_inputs/[A-Za-z0-9_]+\.pt"
    r"|extra/[A-Za-z0-9_.-]+)$")
_TARGET = re.compile(r"^(torch\.ops\.aten\.[a-z0-9_]+\.[A-Za-z0-9_]+|_operator\.getitem)$")
_SYMBOL = re.compile(r"^(Symbol\('s\d+', positive=True, integer=True\)|\d+)$")
_PYTREE_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}


class UnsafeModelFile(ValueError):
    """A file we will not hand to torch.export.load; the message says which member and why."""


def _check_payload_config(text: str, member: str, prefix: str) -> None:
    try:
        config = json.loads(text)["config"]
    except (ValueError, KeyError, TypeError):
        raise UnsafeModelFile(f"{member} is not a payload config") from None
    for fqn, entry in config.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False \
                or not str(entry.get("path_name", "")).startswith(prefix):
            raise UnsafeModelFile(f"{member}: entry {fqn!r} is not a raw tensor (pickled payloads are refused)")


def _check_pytree_spec(spec) -> None:
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            raise UnsafeModelFile("a pytree spec is not JSON") from None
    if isinstance(spec, dict):
        if "type" in spec and spec["type"] not in _PYTREE_TYPES:
            raise UnsafeModelFile(f"input/output structure of type {spec['type']!r} is refused")
        for child in spec.get("children_spec", []) or []:
            _check_pytree_spec(child)
    elif isinstance(spec, list):
        for item in spec:
            _check_pytree_spec(item)


def _check_program(obj, member: str) -> None:
    """Walk the serialized program: node targets, symbolic expressions, custom objects, pytrees."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, list):
            stack.extend(o)
            continue
        if not isinstance(o, dict):
            continue
        for key, value in o.items():
            if key == "target" and isinstance(value, str) and not _TARGET.match(value):
                raise UnsafeModelFile(f"{member}: node target {value[:60]!r} is not an ATen operator")
            if key == "expr_str" and not (isinstance(value, str) and _SYMBOL.match(value)):
                raise UnsafeModelFile(f"{member}: symbolic expression {str(value)[:60]!r} is refused")
            if key == "custom_obj_values" and value:
                raise UnsafeModelFile(f"{member}: custom objects are refused")
            if key in ("in_spec", "out_spec"):
                _check_pytree_spec(value)
            if key == "range_constraints" and isinstance(value, dict):
                bad = [k for k in value if not re.match(r"^s\d+$", k)]
                if bad:
                    raise UnsafeModelFile(f"{member}: range constraint {bad[0][:60]!r} is refused")
            if isinstance(value, (dict, list)):
                stack.append(value)


def check_model_archive(path: Path) -> None:
    """Raise UnsafeModelFile unless `path` is a plain torch.export archive safe to load. A file the
    checks cannot even read (a member with a bad CRC, a config of the wrong JSON type, text that is
    not UTF-8, JSON nested past the parser's depth) is refused too: whatever stops the check is a
    reason to refuse the file, never a traceback."""
    try:
        _check_model_archive(path)
    except UnsafeModelFile:
        raise
    except Exception as e:  # RecursionError, UnicodeDecodeError, BadZipFile, AttributeError, ...
        raise UnsafeModelFile(f"a malformed archive ({type(e).__name__})") from None


def _check_model_archive(path: Path) -> None:
    import torch
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeModelFile(f"not a zip archive ({type(e).__name__})") from None
    with zf:
        infos = zf.infolist()
        if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED:
            raise UnsafeModelFile(f"members add up to more than {MAX_UNCOMPRESSED // 2**20} MB")
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1 or any("/" not in i.filename for i in infos):
            raise UnsafeModelFile("members must all sit under one archive folder")
        root = roots.pop() + "/"
        models = []
        for info in infos:
            rel = info.filename[len(root):]
            if info.is_dir() or rel in _FIXED:
                continue
            m = _MEMBER.match(rel)
            if not m or ".." in rel:
                raise UnsafeModelFile(f"unexpected member {rel!r}")
            if m.group("model"):
                models.append(m.group("model"))
        try:
            if zf.read(root + "archive_format").decode() != "pt2":
                raise UnsafeModelFile("archive_format is not pt2")
        except KeyError:
            raise UnsafeModelFile("no archive_format member") from None
        if not models:
            raise UnsafeModelFile("no program in the archive")
        for info in infos:
            rel = info.filename[len(root):]
            data = zf.read(info) if not info.is_dir() else b""
            if rel.endswith("_weights_config.json"):
                _check_payload_config(data.decode("utf-8", "replace"), rel, "weight_")
            elif rel.endswith("_constants_config.json"):
                _check_payload_config(data.decode("utf-8", "replace"), rel, "tensor_")
            elif rel.startswith("models/"):
                try:
                    program = json.loads(data)
                except ValueError:
                    raise UnsafeModelFile(f"{rel} is not JSON") from None
                _check_program(program, rel)
            elif rel.startswith("data/sample_inputs/"):
                try:  # the same bytes torch would unpickle, through the weights-only unpickler
                    torch.load(io.BytesIO(data), weights_only=True)
                except Exception:
                    raise UnsafeModelFile(f"{rel} needs full unpickling (refused)") from None
