"""Issue 25: what a study records is true, and a study never mixes protocols silently.

Every number and name a user types is checked in one place; a resume keeps the study's protocol;
records of training runs say what they trained on; the dashboard and stopped trials behave as a
user expects. The CLI tests run real processes (the `cli` fixture, tests/conftest.py)."""
import argparse
import hashlib
from pathlib import Path

import pytest

import study
from storage.artifacts import artifact_dir
from storage.db import StudyError, check_study_name, default_url, storage_url
from tests.conftest import make_tiny_mnist


def _subparsers():
    sub = next(a for a in study.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


RECIPE_INTS = {f"--{name.replace('_', '-')}" for name, kind in study.RECIPE_FLAGS.items() if kind is int}
CHECKED = {study.count: ("0", "-5"), study.whole: ("-1",), study.port: ("0", "65536")}


def _integer_flags():
    """(command, flag, type) of every flag that takes an integer."""
    for command, p in _subparsers().items():
        for action in p._actions:
            if action.option_strings and action.type in (int, *CHECKED):
                yield command, action.option_strings[-1], action.type


def test_no_flag_takes_an_unchecked_integer():
    """A new integer flag must go through count, whole or port (or be a recipe setting, checked by
    TrainConfig): the class is closed, not patched flag by flag."""
    bare = [(c, f) for c, f, t in _integer_flags() if t is int and f not in RECIPE_INTS]
    assert not bare, f"flags taking a bare int: {bare}"
    counts = {(c, f) for c, f, t in _integer_flags() if t is study.count}
    for needed in [("search", "--train-limit"), ("search", "--epochs"), ("search", "--n-trials"),
                   ("search", "--workers"), ("search", "--last-k"), ("search", "--max-params"),
                   ("find", "--seeds"), ("find", "--top"), ("find", "--train-limit"), ("verify", "--seeds"),
                   ("verify", "--train-limit"), ("train", "--train-limit"), ("train", "--epochs"),
                   ("bench", "--steps"), ("bench", "--repeats"), ("report", "--top")]:
        assert needed in counts, needed
    assert ("dashboard", "--port", study.port) in set(_integer_flags())


@pytest.mark.parametrize("command, flag, kind", list(_integer_flags()))
def test_every_integer_flag_refuses_a_bad_value_in_one_line(command, flag, kind, capsys):
    if kind is int:
        pytest.skip("a recipe setting: TrainConfig checks it")
    for bad in CHECKED[kind] + ("x",):
        with pytest.raises(SystemExit) as e:
            study.main([command, flag, bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert f"argument {flag}: must be" in err and repr(bad) in err


def test_a_negative_train_limit_is_refused_by_the_split_too(tiny_root):
    from search.data import DataError, load_mnist, make_split
    data = load_mnist(tiny_root, download=False)
    for bad in (-5, 0):
        with pytest.raises(DataError, match="--train-limit must be a positive integer"):
            make_split(data, train_limit=bad)
    assert len(make_split(data, final=True, train_limit=7).train_labels) == 7


BAD_NAMES = ["../../x", "../x", "/tmp/abs-study", "a/b", "a\\b", "..", ".", "x\x00y", "x\ny", "n" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_study_name_never_becomes_a_path(name):
    with pytest.raises(StudyError, match="--study-name must be"):
        check_study_name(name)
    for make in (lambda: default_url(name), lambda: storage_url(study_name=name),
                 lambda: storage_url(study_name=name, storage="sqlite:///elsewhere.db"),
                 lambda: artifact_dir("postgresql://u@h/db", name)):
        with pytest.raises(StudyError):
            make()
    assert default_url("find-5k.v2") == "sqlite:///studies/find-5k.v2.db"


def _tree(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../x", "/tmp/mnist-nas-abs-study", "a/b", "..", "a\\b"])
def test_a_path_as_study_name_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, name):
    work = tmp_path / "w" / "v"
    make_tiny_mnist(work / "data", n_train=60, n_test=20)
    before = _tree(tmp_path)
    for args in (["search", "--n-trials", "1", "--epochs", "1", "--data-dir", "data"],
                 ["find", "--n-trials", "1", "--epochs", "1", "--data-dir", "data", "-o", "m.pt2"],
                 ["report"], ["dashboard", "--port", "1"], ["notes"],
                 ["search", "--storage", "sqlite:///s.db", "--n-trials", "1", "--epochs", "1", "--data-dir", "data"]):
        r = cli(*args, "--study-name", name, cwd=work, check=False, timeout=120)
        assert r.returncode == 2 and r.stderr.startswith("error: --study-name must be"), (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert _tree(tmp_path) == before
    assert not Path("/tmp/mnist-nas-abs-study.db").exists()


def test_help_examples_never_write_into_shipped_folders():
    """`--help` examples are copied and run as they are: none may write over a shipped model or
    a committed figure."""
    for command, p in _subparsers().items():
        text = p.format_help()
        assert "models/" not in text and "docs/" not in text, (command, text)


# The dashboard ------------------------------------------------------------------------------------

def _small_study(d: Path, name: str = "dash", n: int = 6) -> str:
    """A study of n complete trials over a few parameters, made directly (no training): enough for
    the dashboard's parameter importances (PED-ANOVA) to warn about too few trials per regime."""
    import optuna
    from storage.db import open_storage
    url = f"sqlite:///{d}/{name}.db"
    study = optuna.create_study(study_name=name, storage=open_storage(url, create=True), direction="maximize")
    dists = {"a": optuna.distributions.FloatDistribution(0, 1), "b": optuna.distributions.IntDistribution(1, 8),
             "c": optuna.distributions.CategoricalDistribution(["x", "y", "z"])}
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(
            params={"a": i / n, "b": 1 + i % 8, "c": "xyz"[i % 3]}, distributions=dists, value=90.0 + i))
    return url


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dashboard_on_a_busy_port_is_one_error_line_before_any_url(cli, tmp_path):
    import socket
    url = _small_study(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("dashboard", "--storage", url, "--study-name", "dash", "--port", port, cwd=tmp_path, check=False,
                timeout=120)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == f"error: port {port} on 127.0.0.1 is already in use (another dashboard?); choose another with --port\n"


@pytest.mark.parametrize("sig, cause", [("SIGTERM", "SIGTERM"), ("SIGINT", "Ctrl-C")])
def test_the_dashboard_is_read_only_quiet_and_stops_on_a_signal_with_one_line_exit_130(cli, tmp_path, sig, cause):
    import json
    import signal
    import urllib.error
    import urllib.request
    from tests.conftest import read_lines_until
    url = _small_study(tmp_path)
    db = tmp_path / "dash.db"
    port = _free_port()
    p = cli.popen("dashboard", "--storage", url, "--study-name", "dash", "--port", port, cwd=tmp_path)
    try:
        lines = read_lines_until(p, lambda ls: "http://" in ls[-1], timeout=120, what="the dashboard's URL")
        assert lines == [f"optuna-dashboard for {url}: http://127.0.0.1:{port}/  (read-only; Ctrl-C to stop)\n"]
        base = f"http://127.0.0.1:{port}"
        assert json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        urllib.request.urlopen(f"{base}/api/studies/1/param_importances", timeout=60).read()  # PED-ANOVA runs
        before = db.read_bytes()
        for method, path, body in (("DELETE", "/api/studies/1", None),
                                   ("PUT", "/api/studies/1/note", {"version": 1, "body": "changed"}),
                                   ("POST", "/api/studies/1/rename", {"study_name": "other"}),
                                   ("POST", "/api/studies", {"study_name": "new", "directions": ["maximize"]})):
            req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == 403 and "read-only" in json.loads(e.value.read())["reason"]
        assert db.read_bytes() == before
        p.send_signal(getattr(signal, sig))
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, (out, err)
    assert out == f"dashboard stopped by {cause}\n" and err == "", (out, err)  # no warnings, no traceback


# A study keeps its protocol -----------------------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_resume_keeps_the_studys_protocol_and_refuses_another_in_one_line(cli, tmp_path):
    import optuna
    make_tiny_mnist(tmp_path / "data", n_train=120, n_test=30)
    made = ["--epochs", "2", "--last-k", "1", "--train-limit", "40", "--max-params", "6000"]
    cli("search", "--study-name", "quick", "--data-dir", "data", "--n-trials", "2", "--workers", "1", "--no-enqueue",
        "--seed", "1", *made, cwd=tmp_path)
    # a resume that leaves the protocol out (a new user's forgotten flags) runs the study's protocol
    r = cli("search", "--study-name", "quick", "--data-dir", "data", "--n-trials", "3", "--workers", "1", cwd=tmp_path)
    assert ("protocol (fixed when the study was made): fewer than 6,000 params, 2 epochs, score = min validation "
            "accuracy of the last 1, the first 40 training images of the search split, objective consistency") in r.stdout
    assert ("this run: --n-trials 3, --workers 1, --pruner median, --sampler tpe, --seed 1, no --timeout; from the "
            "study (not given): --max-params --epochs --last-k --train-limit --objective --pruner --sampler --seed "
            "--space") in r.stdout
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{tmp_path}/studies/quick.db")
    attrs = study.user_attrs
    assert (attrs["epochs"], attrs["last_k"], attrs["train_limit"], attrs["max_params"]) == (2, 1, 40, 6000)
    assert attrs["n_trials"] == 3 and attrs["seed"] == 1  # what a run may change is stored as it runs
    trained = [t for t in study.trials if "epochs" in t.user_attrs]
    assert len(study.trials) == 3 and all(len(t.user_attrs["epochs"]) == 2 for t in trained)
    # the same values given again are no difference
    again = cli("search", "--study-name", "quick", "--data-dir", "data", *made, cwd=tmp_path)
    assert "nothing to run" in again.stdout
    # another protocol: refused in one line naming every difference, the file unchanged
    db = tmp_path / "studies" / "quick.db"
    before = _digest(db)
    tail = " (these fix what a trial's score means: leave them out to use the study's, or use a new --study-name)\n"
    for args, was, asks in (
            (["search", "--epochs", "3", "--last-k", "2", "--n-trials", "8"],
             "--epochs 2, --last-k 1", "--epochs 3, --last-k 2"),
            (["search", "--train-limit", "100"], "--train-limit 40", "--train-limit 100"),
            (["search", "--objective", "pareto", "--max-params", "5000"],
             "--max-params 6000, --objective consistency", "--max-params 5000, --objective pareto"),
            (["find", "--epochs", "15", "--target", "0", "-o", "m.pt2"], "--epochs 2", "--epochs 15"),
            (["find", "--last-k", "2", "--target", "0", "-o", "m.pt2"], "--last-k 1", "--last-k 2")):
        r = cli(*args, "--study-name", "quick", "--data-dir", "data", cwd=tmp_path, check=False)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout, r.stderr)
        assert r.stderr == f"error: study 'quick' was made with {was}; this run asks {asks}{tail}", r.stderr
        assert _digest(db) == before
    assert not (tmp_path / "m.pt2").exists()
    # a worker joins with the stored settings, as before
    w = cli("worker", "--study-name", "quick", "--data-dir", "data", cwd=tmp_path)
    assert "3 finished trials of a budget of 3" in w.stdout


def test_resolve_takes_what_was_left_out_from_the_study_and_defaults_for_a_new_one():
    from search.config import SearchConfig
    from space.searchspace import SearchSpace
    defaults = study.search_defaults(20)
    none = {"n_trials": None, "max_params": None, "epochs": None, "last_k": None, "train_limit": None,
            "objective": None, "pruner": None, "sampler": None, "seed": None, "space": None}
    new = SearchConfig.resolve(none, None, defaults=defaults, study_name="s")
    assert (new.n_trials, new.epochs, new.k, new.train_limit, new.taken_from_study) == (20, 15, 3, None, ())
    from storage.records import StudySettings
    stored = StudySettings({**SearchConfig(epochs=3, last_k=1, train_limit=5000, n_trials=6).stored_settings().stored,
                            "space": SearchSpace.default().to_dict()})
    old = SearchConfig.resolve({**none, "n_trials": 8}, stored, defaults=defaults, study_name="s")
    assert (old.n_trials, old.epochs, old.k, old.train_limit) == (8, 3, 1, 5000)
    assert "n_trials" not in old.taken_from_study and {"epochs", "last_k", "train_limit"} <= set(old.taken_from_study)
    with pytest.raises(StudyError, match=r"made with --epochs 3, --last-k 1, --train-limit 5000; this run asks "
                                         r"--epochs 15, --last-k 3, --train-limit 60000"):
        SearchConfig.resolve({**none, "epochs": 15, "last_k": 3, "train_limit": 60000}, stored, defaults=defaults,
                             study_name="s")
    # find reading a finished search may ask for a smaller budget (it filters the candidates)
    assert SearchConfig.resolve({**none, "max_params": 4000}, stored, defaults=defaults, study_name="s",
                                budget_may_differ=True).max_params == 4000


# Stopped trials -----------------------------------------------------------------------------------

def test_a_trial_stopped_by_sigterm_is_retried_with_the_same_parameters_on_the_next_resume(cli, tmp_path):
    import optuna
    import signal
    from tests.conftest import read_lines_until
    make_tiny_mnist(tmp_path / "data", n_train=300, n_test=60)
    p = cli.popen("search", "--study-name", "c", "--data-dir", "data", "--epochs", "15", "--workers", "1",
                  "--n-trials", "2", "--pruner", "none", "--no-enqueue", "--max-params", "6000", cwd=tmp_path)
    try:  # one complete trial, then a few epochs of the next
        read_lines_until(p, lambda ls: any("done, consistency score" in l for l in ls) and " epoch  2:" in ls[-1],
                         timeout=300, what="the second trial's epoch 2")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "Traceback" not in err, (out, err)
    assert "stopped by SIGTERM" in out and "; retried with the same parameters on the next resume" in out
    url = f"sqlite:///{tmp_path}/studies/c.db"
    stopped = optuna.load_study(study_name="c", storage=url).trials[-1]
    assert stopped.state.name == "FAIL" and stopped.user_attrs["stopped"] == "SIGTERM"
    assert stopped.user_attrs["ended"].startswith("stopped by SIGTERM after ")
    # the next resume (flags left out: the study's own) runs it again, first, with the same parameters
    r = cli("search", "--study-name", "c", "--data-dir", "data", cwd=tmp_path)
    assert (f"retrying 1 trial(s) stopped by Ctrl-C or SIGTERM before, with the same parameters: "
            f"trial(s) {stopped.number}") in r.stdout
    assert "waiting" not in r.stdout
    trials = optuna.load_study(study_name="c", storage=url).trials
    retry = trials[stopped.number + 1]
    assert len(trials) == stopped.number + 2  # the budget of 2 is met by the retry: no new draw
    assert retry.state.name == "COMPLETE" and retry.params == stopped.params
    assert retry.system_attrs["failed_trial"] == stopped.number and len(retry.user_attrs["epochs"]) == 15
    again = cli("search", "--study-name", "c", "--data-dir", "data", cwd=tmp_path)
    assert "retrying" not in again.stdout and "nothing to run" in again.stdout


def test_the_waiting_line_is_said_only_for_trials_running_elsewhere(cli, tmp_path):
    """Two workers of one search wait for each other's last trial in silence (the normal end of a
    run); a second search on a study whose budget is covered by another's running trial says, in
    plain words, what it waits for."""
    from tests.conftest import read_lines_until
    make_tiny_mnist(tmp_path / "data", n_train=1200, n_test=60)
    two = cli("search", "--study-name", "two", "--data-dir", "data", "--epochs", "2", "--workers", "2",
              "--n-trials", "3", "--pruner", "none", "--no-enqueue", "--max-params", "6000", cwd=tmp_path)
    assert "waiting" not in two.stdout + two.stderr and "done after" in two.stdout
    a = cli.popen("search", "--study-name", "w", "--data-dir", "data", "--epochs", "15", "--workers", "1",
                  "--n-trials", "1", "--pruner", "none", "--no-enqueue", "--max-params", "6000", cwd=tmp_path)
    try:
        read_lines_until(a, lambda ls: " epoch  1:" in ls[-1], timeout=300, what="the first search's first epoch")
        b = cli("search", "--study-name", "w", "--data-dir", "data", "--workers", "1", cwd=tmp_path, timeout=600)
        a.communicate(timeout=600)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert ("the budget of 1 trial is covered; waiting for 1 trial(s) running elsewhere to end (another search "
            "or worker on this study; if one's process was killed, it is marked failed after 90 s without a "
            "heartbeat and retried here)") in b.stdout, b.stdout
    assert b.stdout.count("waiting for") == 1 and "0 new trials" in b.stdout


# Provenance from facts ----------------------------------------------------------------------------

def _versions() -> dict:
    import subprocess
    from importlib import metadata
    import optuna
    import torch
    from tests.conftest import ROOT
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return {"mnist-nas": metadata.version("mnist-nas"), "torch": torch.__version__, "optuna": optuna.__version__,
            "commit": head.stdout.strip() if head.returncode == 0 else None}


def _check_run(run: dict, *, images: int, available: int, final: bool, epochs: int, seeds: list[int]):
    assert (run["images"], run["available"], run["final"], run["epochs"], run["seeds"]) == (
        images, available, final, epochs, seeds), run
    assert set(run["devices"]) == {str(s) for s in seeds} and set(run["devices"].values()) == {"cpu"}
    made = run["made_by"]
    assert {k: made[k] for k in ("mnist-nas", "torch", "optuna", "commit")} == _versions()
    assert run["text"].startswith(run["trained_on"] + "; made by mnist-nas ") and "torch " in run["text"]


def test_every_record_of_a_limited_run_says_what_it_trained_on_and_what_made_it(cli, tmp_path):
    """A tiny find with --train-limit 60 and --epochs 2 on 200 training images: trials, confirm
    seeds, verify seeds, the model file, its card and the notes all say 60 of 200 (verify) or of
    the search split's 167 (search, confirm), 2 epochs, their seeds, cpu and the versions; none
    says 'all' or MNIST's 60,000."""
    import json
    import optuna
    from optuna_dashboard import get_note
    from storage.modelfile import load_model_file
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    r = cli("find", "--study-name", "lim", "--data-dir", "data", "--train-limit", "60", "--epochs", "2", "--last-k", "1",
            "--seeds", "2", "--top", "2", "--workers", "1", "--max-params", "6000", "--n-trials", "3", "--no-enqueue",
            "--target", "0", "-o", "lim.pt2", cwd=tmp_path)
    assert "all training images" not in r.stdout and "60,000" not in r.stdout
    assert "on the first 60 of the search split's 167 training images (scored on its validation part), 2 epochs" in r.stdout
    assert "on the first 60 of the 200 training images, 2 epochs, test set every epoch" in r.stdout
    study = optuna.load_study(study_name="lim", storage=f"sqlite:///{tmp_path}/studies/lim.db")
    # every record this find wrote (with provenance, finish times and hold estimates, which no
    # committed study has) reads into its storage.records dataclass and writes back as stored
    from storage import records
    for key, value in study.user_attrs.items():
        if key.startswith(records.FIND) or key == records.PRIOR:
            assert json.dumps(records.parse(key, value).to_stored()) == json.dumps(value), key
    assert records.FindRecord.of(study).verify(study.user_attrs["find:winner"]).provenance.seeds == [1, 2]
    for t in study.trials:
        assert json.dumps(records.TrialRecord.of(t).to_stored()) == json.dumps(t.user_attrs)
    trained = [t for t in study.trials if "epochs" in t.user_attrs]
    assert trained
    for t in trained:
        _check_run(t.user_attrs["provenance"], images=60, available=167, final=False, epochs=2, seeds=[t.number])
        note = get_note(optuna.trial.Trial(study, t._trial_id))
        assert f"**Trained on:** the first 60 of the search split's 167 training images (scored on its validation " \
               f"part), 2 epochs, seed {t.number}, on cpu; made by mnist-nas" in note
    winner = study.user_attrs["find:winner"]
    for number in study.user_attrs["find:candidates"]:
        _check_run(study.user_attrs[f"find:confirm:{number}"]["provenance"], images=60, available=167, final=False,
                   epochs=2, seeds=[10001])
    verified = study.user_attrs[f"find:verify:{winner}"]
    _check_run(verified["provenance"], images=60, available=200, final=True, epochs=2,
               seeds=sorted(map(int, verified["results"])))
    note = get_note(optuna.trial.Trial(study, study.trials[winner]._trial_id))
    assert "Retrained with further seeds on the first 60 of the search split's 167 training images" in note
    assert "`find` retrained it on the first 60 of the 200 training images, 2 epochs, seeds 1, 2" in note
    _, meta = load_model_file(tmp_path / "lim.pt2")
    assert meta["trained_on"] == "the first 60 of the 200 training images, 2 epochs, seed 1, on cpu (seed 1 of the verify stage)"
    _check_run(meta["provenance"], images=60, available=200, final=True, epochs=2, seeds=[1])
    assert meta["exported_by"]["mnist-nas"] == _versions()["mnist-nas"]
    card = (tmp_path / "lim.md").read_text()
    assert "The file holds the model trained on the first 60 of the 200 training images, 2 epochs, seed 1, on cpu" in card
    assert "Verify: retrained on the first 60 of the 200 training images, 2 epochs, seeds 1, 2, on cpu" in card
    assert "**Made by:** mnist-nas " in card and "60,000" not in card and "all training images" not in card
    # a trial's own weights exported: its record travels with the file
    cli("export", "--study-name", "lim", "--trial", str(winner), "-o", "trial.pt2", cwd=tmp_path)
    _, meta = load_model_file(tmp_path / "trial.pt2")
    assert meta["provenance"] == study.trials[winner].user_attrs["provenance"]
    # verify and train record their own runs the same way
    v = json.loads(cli("verify", "--study-name", "lim", "--trial", str(winner), "--seeds", "1", "--max-seeds", "1",
                       "--epochs", "1", "--train-limit", "30", "--target", "0", "--json", "--data-dir", "data",
                       cwd=tmp_path).stdout)
    _check_run(v["provenance"], images=30, available=200, final=True, epochs=1, seeds=[1])
    assert v["provenance"]["trained_on"] == "the first 30 of the 200 training images, 1 epoch, seed 1, on cpu"
    cli("train", "model6", "--epochs", "1", "--train-limit", "30", "--data-dir", "data", "--out", "run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _check_run(metrics["provenance"], images=30, available=167, final=False, epochs=1, seeds=[1])
