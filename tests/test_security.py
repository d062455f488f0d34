"""Hostile input: files a user hands us must never run code, and read-only commands never write.

Each hostile .pt2 is a real exported archive with one member changed so that torch.export.load
would run `touch <marker>` (the first test shows that it really does); evaluate must refuse it in
one line, exit 2, and the marker must not appear.
"""
import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from space.baselines import BASELINES
from space.model import Normalised, build_model
from storage.modelfile import save_model_file
from tests.conftest import make_tiny_mnist

pytestmark = pytest.mark.slow  # every test starts a process: the CLI, or plain torch


class Touch:
    """Unpickling this runs `touch <path>`: a stand-in for any code an attacker wants run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def evil_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Touch(marker)}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("sec")
    make_tiny_mnist(d / "data")
    spec = BASELINES["model6"].spec
    module = Normalised(build_model(spec)).eval()
    save_model_file(module, spec, {"note": "test"}, d / "good.pt2")
    return d, d / "good.pt2"


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy the archive, letting change(name, data) return new bytes, None to drop, or add members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for name in zin.namelist():
            data = change(name[len(root) + 1:], zin.read(name))
            if data is not None:
                zout.writestr(name, data)
        for rel, data in getattr(change, "extra", {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def hostile_variants(marker: Path) -> dict:
    evil = evil_pickle(marker)

    def sample_inputs(rel, data):
        return evil if rel.startswith("data/sample_inputs/") else data

    def legacy_weights(rel, data):
        return data
    legacy_weights.extra = {"data/weights/model.pt": evil}

    def pickled_weight(rel, data):
        if rel == "data/weights/model_weights_config.json":
            cfg = json.loads(data)
            first = next(iter(cfg["config"].values()))
            first["use_pickle"] = True
            return json.dumps(cfg)
        if rel == "data/weights/weight_0":
            return evil
        return data

    def opaque_constant(rel, data):
        if rel == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": True, "tensor_meta": None}}})
        return data
    opaque_constant.extra = {"data/constants/opaque_obj_0": evil}

    def node_target(rel, data):
        if rel.startswith("models/"):
            prog = json.loads(data)
            prog["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
            return json.dumps(prog)
        return data

    def sympy_expr(rel, data):
        if rel.startswith("models/"):
            text = data.decode().replace("Symbol('s", "__import__('os').system('touch " + str(marker) + "') or Symbol('s", 1)
            return text.encode()
        return data

    def root_member(rel, data):
        return data
    return {"sample inputs": sample_inputs, "legacy weights": legacy_weights,
            "pickled weight": pickled_weight, "opaque constant": opaque_constant,
            "node target": node_target, "sympy expression": sympy_expr}


def test_the_hostile_sample_inputs_really_run_code_under_plain_torch_export_load(good_file, tmp_path):
    """Proof that the threat is real (so the refusals below mean something)."""
    d, good = good_file
    marker = tmp_path / "pwned"
    bad = rewrite(good, tmp_path / "bad.pt2", hostile_variants(marker)["sample inputs"])
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(bad)!r})"],
                   capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["sample inputs", "legacy weights", "pickled weight", "opaque constant",
                                  "node target", "sympy expression"])
def test_evaluate_refuses_hostile_archives_without_running_them(cli, good_file, tmp_path, kind):
    d, good = good_file
    marker = tmp_path / "pwned"
    bad = rewrite(good, tmp_path / "bad.pt2", hostile_variants(marker)[kind])
    r = cli("evaluate", bad, "--data-dir", d / "data", cwd=tmp_path, check=False, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and "refused" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not marker.exists()


def test_the_untouched_file_still_evaluates(cli, good_file, tmp_path):
    d, good = good_file
    r = cli("evaluate", good, "--data-dir", d / "data", cwd=tmp_path, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout


@pytest.mark.parametrize("meta", [b"not json", b"[1, 2]", b'{"params": "many", "trial": null}'])
def test_broken_metadata_is_one_line_or_ignored_never_a_traceback(cli, good_file, tmp_path, meta):
    d, good = good_file
    bad = rewrite(good, tmp_path / "meta.pt2", lambda rel, data: meta if rel == "extra/mnist_nas.json" else data)
    r = cli("evaluate", bad, "--data-dir", d / "data", cwd=tmp_path, check=False, timeout=300)
    assert "Traceback" not in r.stderr
    assert r.returncode in (0, 2) and (r.returncode == 0 or r.stderr.startswith("error:")), r.stderr


def digest(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("command", [["report"], ["export", "-o", "x.pt2"], ["verify"], ["dashboard", "--port", "1"]])
@pytest.mark.parametrize("kind", ["empty file", "other program's database"])
def test_read_only_commands_never_create_tables_in_what_they_read(cli, tmp_path, command, kind):
    db = tmp_path / "x.db"
    if kind == "empty file":
        db.write_bytes(b"")
    else:
        con = sqlite3.connect(db)
        con.execute("create table notes (id integer primary key, body text)")
        con.execute("insert into notes (body) values ('mine')")
        con.commit()
        con.close()
    before = digest(db)
    r = cli(*command, "--storage", f"sqlite:///{db}", cwd=tmp_path, check=False, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    assert "no Optuna" in r.stderr
    assert digest(db) == before
