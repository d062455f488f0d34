"""Bad input, by class, in one process (fast): whatever a file or flag holds, the answer is one
`error:` line and exit 2, never a traceback, and what is stored is not changed. Each class here was
found by a review that tried the CLI (2026-11-30): JSON the parser itself refuses, files that
cannot be read, malformed model archives, output paths that cannot be written, SQLite databases a
read-only command would have changed. tests/test_security.py holds the hostile-archive cases that
need the CLI."""
import json
import sqlite3
import struct
import zipfile
from pathlib import Path

import optuna
import pytest

import study
from space.baselines import BASELINES
from space.model import Normalised, build_model
from space.spec import SpecError, parse_json
from storage.archive import UnsafeModelFile, check_model_archive
from storage.db import StudyError, load_study, sqlite_path
from storage.modelfile import load_model_file, save_model_file
from storage.outputs import check_output

DEEP = "[" * 100_000 + "]" * 100_000  # past the parser's recursion limit
BIG = '{"x": ' + "9" * 5000 + "}"  # past Python's 4,300-digit int conversion limit


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command that got as far as its default paths writes here, not in the repo


def run(argv, capsys) -> tuple[int, str]:
    """study.main in this process: (exit code, stderr)."""
    code = study.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(code: int, err: str) -> bool:
    return code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text, says", [(DEEP, "nested too deeply"), (BIG, "4300 digits"), ("{", "not valid JSON")])
def test_json_the_parser_refuses_is_one_error(text, says):
    with pytest.raises(SpecError, match="not valid JSON") as e:
        parse_json(text, SpecError)
    assert says in str(e.value)


@pytest.mark.parametrize("flag", ["space", "points", "arch"])
@pytest.mark.parametrize("content", [DEEP, BIG])
def test_every_json_file_flag_refuses_what_the_parser_refuses(tmp_path, capsys, flag, content):
    f = tmp_path / "x.json"
    f.write_text(content)
    argv = {"space": ["space", "--space", f], "points": ["search", "--study-name", "s", "--enqueue", f],
            "arch": ["rf", "--arch", f]}[flag]
    code, err = run(argv, capsys)
    assert one_error_line(code, err) and "not valid JSON" in err, err


def test_a_recipe_whose_config_is_not_an_object_is_one_error(tmp_path, capsys):
    f = tmp_path / "r.json"
    for config in ([1], None, "fast"):
        f.write_text(json.dumps({"config": config}))
        code, err = run(["train", "--recipe", f, "--epochs", "1"], capsys)
        assert one_error_line(code, err) and '"config" must be a JSON object' in err, err


@pytest.mark.parametrize("make", ["too long", "a folder", "not readable"])
def test_files_that_cannot_be_read_are_one_error(tmp_path, capsys, make):
    path = {"too long": tmp_path / ("a" * 300 + ".json"), "a folder": tmp_path,
            "not readable": Path("/proc/self/mem")}[make]
    for argv in (["rf", "--arch", path], ["space", "--space", path], ["evaluate", path]):
        code, err = run(argv, capsys)
        assert one_error_line(code, err), (argv, err)


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("archive")
    spec = BASELINES["model2"].spec
    save_model_file(Normalised(build_model(spec)).eval(), spec, {"note": "test"}, d / "good.pt2")
    return d / "good.pt2"


def _rewrite(src: Path, dst: Path, change) -> Path:
    """The archive with change(relative name, bytes) -> bytes applied to each member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name.split("/", 1)[1], zin.read(name)))
    return dst


MALFORMED = {
    "a config that is a list": lambda rel, data: b'{"config": []}' if rel.endswith("_weights_config.json") else data,
    "archive_format not UTF-8": lambda rel, data: b"\xff\xfe" if rel == "archive_format" else data,
    "a program nested past the parser": lambda rel, data: DEEP.encode() if rel.startswith("models/") else data,
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_archive_is_refused_not_a_traceback(good_archive, tmp_path, kind):
    bad = _rewrite(good_archive, tmp_path / "bad.pt2", MALFORMED[kind])
    with pytest.raises(UnsafeModelFile):
        check_model_archive(bad)
    with pytest.raises(StudyError, match="refused"):
        load_model_file(bad)


def test_a_member_with_a_bad_crc_is_refused(good_archive, tmp_path):
    bad = tmp_path / "crc.pt2"
    data = bytearray(good_archive.read_bytes())
    with zipfile.ZipFile(good_archive) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("archive_format"))
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's own
    start = info.header_offset + 30 + name_len + extra_len
    data[start] ^= 0xFF  # the stored bytes change, the recorded CRC does not
    bad.write_bytes(bytes(data))
    with pytest.raises(StudyError, match="refused"):
        load_model_file(bad)


def test_metadata_nested_past_the_parser_is_broken_metadata(good_archive, tmp_path):
    bad = _rewrite(good_archive, tmp_path / "meta.pt2",
                   lambda rel, data: DEEP.encode() if rel == "extra/mnist_nas.json" else data)
    with pytest.raises(StudyError, match="broken metadata"):
        load_model_file(bad)


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert check_output(tmp_path / "new" / "deeper" / "m.pt2", what="-o", suffixes=(".pt2",)).name == "m.pt2"
    for path, kw, says in ((tmp_path / "m.onnx", dict(suffixes=(".pt2",)), "must name a .pt2 file"),
                           (tmp_path, dict(suffixes=()), "is a folder"),
                           (a_file, dict(folder=True), "is a file"),
                           (a_file / "m.pt2", dict(suffixes=(".pt2",)), "is not a folder"),
                           (tmp_path / ("a" * 300 + ".pt2"), dict(suffixes=(".pt2",)), "File name too long")):
        with pytest.raises(StudyError, match=says):
            check_output(path, what="-o", **kw)


def test_front_refuses_a_format_matplotlib_cannot_write(tmp_path, capsys):
    code, err = run(["front", "--study", f"x=sqlite:///{tmp_path / 'none.db'}", "-o", tmp_path / "front.foo"], capsys)
    assert one_error_line(code, err) and "must name a .png or .pdf or .svg file" in err, err


def _study_file(path: Path) -> Path:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    return path


@pytest.mark.parametrize("damage", ["drop table alembic_version", "delete from alembic_version",
                                    "delete from version_info"])
def test_a_read_only_open_never_stamps_what_optuna_would(tmp_path, damage):
    db = _study_file(tmp_path / "x.db")
    with sqlite3.connect(db) as con:
        con.execute(damage)
    con.close()
    before = db.read_bytes()
    with pytest.raises(StudyError, match="no Optuna studies|not a complete Optuna storage"):
        load_study(study_name="s", storage=f"sqlite:///{db}")
    assert db.read_bytes() == before


def test_every_sqlite_spelling_is_a_file_and_none_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite+pysqlite:///a/x.db") == Path("a/x.db")
    assert sqlite_path("sqlite:///x.db") == Path("x.db") and sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql://u@h/db") is None
    with pytest.raises(StudyError, match="no study database"):
        load_study(study_name="s", storage="sqlite+pysqlite:///made.db")
    assert not (tmp_path / "made.db").exists()
