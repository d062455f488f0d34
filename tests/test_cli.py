"""The one door: every command explains itself, and a spec file works wherever a baseline does."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from space.baselines import BASELINES


def _commands() -> list[str]:
    import argparse
    from study import parser
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


COMMANDS = _commands()  # every command the CLI has, so a new one is covered without editing this


def test_the_command_list_is_the_real_one():
    assert {"search", "space", "verify", "export"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli, command):
    r = cli(command, "--help", check=False)
    assert r.returncode == 0 and "usage:" in r.stdout and len(r.stdout.splitlines()) > 3
    assert f"example: mnist-nas {command}" in r.stdout


def test_baselines_lists_six_with_counts(cli):
    r = cli("baselines", check=False)
    assert r.returncode == 0
    for name in BASELINES:
        assert name in r.stdout
    assert "7,416" in r.stdout and "7,272" in r.stdout and "6,379,786" in r.stdout


def test_rf_and_summary_accept_a_spec_file(cli, tmp_path):
    path = tmp_path / "m6.json"
    path.write_text(BASELINES["model6"].spec.to_json())
    assert cli("rf", "--arch", path, check=False).stdout == cli("rf", "model6", check=False).stdout
    s = cli("summary", "--arch", path, check=False)
    assert s.returncode == 0 and "Total params: 7,416" in s.stdout


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('{"layers": [{"op": "conv", "out": 8}]}', "head"),
])
def test_a_bad_spec_file_is_one_line_exit_2(cli, tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    r = cli("rf", "--arch", path, check=False)
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1


def test_unknown_baseline_and_missing_file(cli):
    assert cli("rf", "model9", check=False).returncode == 2
    r = cli("summary", "--arch", "/nonexistent.json", check=False)
    assert r.returncode == 2 and "no such architecture file" in r.stderr


def test_console_script_is_the_same_cli(cli):
    exe = Path(sys.executable).parent / "mnist-nas"
    if not exe.exists():
        exe = shutil.which("mnist-nas")
    if not exe:
        pytest.skip("mnist-nas is not installed in this environment (pip install -e . installs it)")
    r = subprocess.run([str(exe), "baselines"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == cli("baselines", check=False).stdout


@pytest.mark.parametrize("args", [["search", "--n-trials", "x"], ["nope"], ["report", "--bogus"], [],
                                  ["search", "--pruner", "fast"], ["search", "--storage", ""]])
def test_argparse_errors_and_empty_values_are_one_line_exit_2(cli, args, tmp_path):
    r = cli(*args, cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "studies").exists()
