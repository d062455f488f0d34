"""storage.records, the one typed record of a study (issue 23, item 3): every stored row of every
study committed under results/ reads into its dataclass and writes back exactly as stored (keys,
values and key order), and `report`, `report --json` and `export --verified` print on copies of
those studies exactly what they printed before the records existed (tests/data/committed-studies.json,
recorded with the code of the commit before, 18c575b, for the ten studies committed then; a study
committed since is covered by the round trip). A change that means to alter those outputs, or a
study committed again with more in it, records them again from this checkout's CLI:
`python tests/test_records.py --record`."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import records  # noqa: E402

EXPECTED = Path(__file__).parent / "data" / "committed-studies.json"


def committed_studies() -> list[str]:
    """The studies committed under results/ (git's list; without git, every results/*.db)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
        paths = [ROOT / p for p in out if p.endswith(".db")]
    except (OSError, subprocess.CalledProcessError):
        paths = list((ROOT / "results").glob("*.db"))
    return sorted(p.stem for p in paths)


STUDIES = committed_studies()


def copy_study(name: str, to: Path) -> str:
    """A copy of results/<name>.db and its artifacts folder under `to`; its storage URL."""
    shutil.copy2(ROOT / "results" / f"{name}.db", to / f"{name}.db")
    if (ROOT / "results" / f"{name}.artifacts").is_dir():
        shutil.copytree(ROOT / "results" / f"{name}.artifacts", to / f"{name}.artifacts")
    return f"sqlite:///{to}/{name}.db"


def _rows(db: Path):
    """(study attributes, [trial attributes]) as stored: the JSON text of each, parsed."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        study = {k: json.loads(v) for k, v in con.execute("select key, value_json from study_user_attributes")}
        trials = {}
        for tid, key, value in con.execute("select trial_id, key, value_json from trial_user_attributes"):
            trials.setdefault(tid, {})[key] = json.loads(value)
        return study, list(trials.values())
    finally:
        con.close()


def test_there_are_committed_studies():
    assert len(STUDIES) >= 10 and "find-8k" in STUDIES


@pytest.mark.parametrize("name", STUDIES)
def test_every_stored_row_of_a_committed_study_round_trips(name, tmp_path):
    """from_stored(x).to_stored() == x for every study attribute and every trial's record, as JSON
    text (so key order too); find's view reads every row it holds."""
    copy_study(name, tmp_path)
    study, trials = _rows(tmp_path / f"{name}.db")
    for key, value in study.items():
        record = records.parse(key, value)
        if key.startswith(records.FIND) or key == records.PRIOR:
            assert hasattr(record, "to_stored"), key  # every find key (and the prior) has its dataclass
            assert json.dumps(record.to_stored()) == json.dumps(value), key
    for attrs in trials:
        assert json.dumps(records.TrialRecord.from_stored(attrs).to_stored()) == json.dumps(attrs)
    find = records.FindRecord(study)
    assert len(find.confirmed()) == sum(k.startswith(records.CONFIRM) for k in study)
    assert len(find.verified()) == sum(k.startswith(records.VERIFY) for k in study)
    for trial, row in find.verified().items():
        assert row.trial == trial and all(isinstance(s, int) for s in row.results)


@pytest.mark.parametrize("name", STUDIES)
def test_every_weights_file_of_a_committed_study_loads_weights_only_and_round_trips(name, tmp_path):
    import torch
    copy_study(name, tmp_path)
    _, trials = _rows(tmp_path / f"{name}.db")
    art = tmp_path / f"{name}.artifacts"
    files = [art / a["weights_artifact"] for a in trials if a.get("weights_artifact")]
    files += sorted((art / "find").glob("*.pt")) if (art / "find").is_dir() else []
    for path in files:
        w = records.WeightsFile.load(path)
        buf = io.BytesIO()
        w.save(buf)
        again = records.WeightsFile.load(io.BytesIO(buf.getvalue()))
        assert again.spec == w.spec and again.config == w.config and again.state_dict.keys() == w.state_dict.keys()
        assert all(torch.equal(again.state_dict[k], v) for k, v in w.state_dict.items())
        assert list(torch.load(path, weights_only=True)) == ["spec", "config", "state_dict"]


def test_rows_keep_unknown_keys_nulls_and_order_and_expose_int_seeds():
    stored = {"epochs": 2, "k": 1, "newer_field": [1], "results": {"2": [1.0, 2.0], "1": [3.0, 4.0]},
              "core_seconds": None, "devices": {}}
    row = records.PartialRow.from_stored(stored, stage="verify", trial=7)
    assert row.results == {2: [1.0, 2.0], 1: [3.0, 4.0]} and row.devices == {} and row.extra == {"newer_field": [1]}
    assert json.dumps(row.to_stored()) == json.dumps(stored) and row.key == "find:partial:verify:7"
    # a field given later is written after the stored ones, as {**stored, new: ...} did
    assert list(row.replace(target=99.4).to_stored()) == list(stored) + ["target"]
    with pytest.raises(records.RecordError):
        records.ConfirmRow.from_stored({"epochs": 2})
    with pytest.raises(records.RecordError):
        records.VerifyRow.from_stored({"trial": 1, "epochs": 2, "k": 1, "target": 9, "seeds": 1, "passed": True,
                                       "results": {"search": [1.0]}})


def test_a_new_verify_row_is_written_in_the_order_find_always_wrote_it():
    from space.hold import decide
    hold = records.HoldEstimate.of(decide([99.5, 99.6, 99.55], target=99.4, level=0.9, min_seeds=3, max_seeds=8))
    row = records.VerifyRow(trial=3, epochs=15, k=3, target=99.4, seeds=3, max_seeds=8,
                            results={1: [99.5], 2: [99.6], 3: [99.55]}, passed=True, hold=hold, trained_on="x",
                            core_seconds=1.0, devices={1: "cpu"}, finished="2025-01-01T00:00:00+00:00")
    stored = row.to_stored()
    assert list(stored) == ["trial", "epochs", "k", "target", "seeds", "max_seeds", "results", "passed", "hold",
                            "trained_on", "core_seconds", "devices", "finished"]
    assert stored["results"] == {"1": [99.5], "2": [99.6], "3": [99.55]} and stored["devices"] == {"1": "cpu"}
    assert records.VerifyRow.from_stored(stored) == row
    event = records.RejudgeEvent(trial=3, from_={"target": 99.4}, to={"target": 99.5}, verdict_before="PASS", at="t")
    assert event.to_stored() == {"trial": 3, "from": {"target": 99.4}, "to": {"target": 99.5},
                                 "verdict_before": "PASS", "at": "t"}


def test_every_verify_seed_that_met_the_test_set_is_counted_finished_or_not():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    done = records.VerifyRow(trial=0, epochs=15, k=3, target=99.4, seeds=3, results={1: [99.3]}, passed=False,
                             stopped=[2])  # seed 2 stopped midway, then not needed: seed 1 had decided
    records.save(study, done)
    assert records.VerifyRow.from_stored(done.to_stored()) == done
    assert records.FindRecord.of(study).runs("verify")[0].test_seeds == 2
    # a verify under way: seeds 1 and 2 finished, 3 started (so scored on the test set already)
    records.save(study, records.PartialRow(stage="verify", trial=1, epochs=15, k=3, target=99.4, seeds=3,
                                           results={1: [99.5], 2: [99.5]}, met=[1, 2, 3]))
    uses = records.FindRecord.of(study).test_set_uses()
    assert uses.seeds == 5 and uses.total == 5
    # a damaged list of seeds is never counted by its characters: the row's one result is
    study.set_user_attr("find:verify:7", {**done.to_stored(), "trial": 7, "stopped": "abc"})
    found = records.FindRecord.of(study)
    assert 7 not in found.verified() and found.runs("verify")[7].test_seeds == 1


def test_every_seed_the_verify_command_started_is_counted(capsys):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    first = records.VerifyCommandRun(trial=2, started="2026-11-30T22:00:00.000001+00:00", met=[1, 2, 3])
    records.save(study, first.replace(verdict="FAIL"))
    # a second run of the same trial, stopped after its first batch had started: no verdict
    records.save(study, records.VerifyCommandRun(trial=2, started="2026-11-30T23:00:00.000002+00:00", met=[1, 2]))
    # damaged rows are skipped, not counted (nor a crash): a list that is not seeds, none at all
    study.set_user_attr("verify:2:damaged", {"trial": 2, "started": "x", "met": "abc"})
    study.set_user_attr("verify:2:null", {"trial": 2, "started": "y", "met": None})
    found = records.FindRecord.of(study)
    assert [r.verdict for r in found.verify_command_runs()] == ["FAIL", None]
    uses = found.test_set_uses()
    assert uses.verify_command_seeds == 5 and uses.total == 5 and uses.seeds == 0
    # the trial the command tested is a candidate that met the test set, once however often it ran
    assert found.candidates_tested() == (2,) and uses.candidates == 1
    from storage.report import find_section
    find_section(study)  # report: a study only the command tested
    assert "candidates that met the test set: 1; test-set uses: 5 seeds of `verify` runs" in capsys.readouterr().out
    records.save(study, records.TestsUsed(trials=(5, 2)))  # find's own, met first, keep their order
    records.save(study, records.VerifyCommandRun(trial=9, started="2026-12-01T01:00:00.000003+00:00", met=[]))
    assert records.FindRecord.of(study).candidates_tested() == (5, 2)  # a run that met nothing: not one
    records.save(study, records.VerifyCommandRun(trial=9, started="2026-12-01T01:00:00.000003+00:00", met=[1]))
    records.save(study, records.VerifyCommandRun(trial=8, started="2026-11-30T01:00:00.000004+00:00", met=[1]))
    assert records.FindRecord.of(study).candidates_tested() == (5, 2, 8, 9)  # the command's by when they ran
    assert records.FindRecord.of(optuna.create_study()).test_set_uses().to_stored() == {
        "candidates": 0, "seeds": 0, "rejudged": 0, "total": 0}  # the stored form as it always was
    assert "verify:2:damaged" not in records.settings_attrs(study.user_attrs)


def test_a_trial_record_refuses_a_field_it_does_not_have():
    assert records.trial_attrs(params=3, start_point="x") == {"params": 3, "start_point": "x"}
    with pytest.raises(TypeError, match="no field 'parms'"):
        records.trial_attrs(parms=3)


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    import pickle
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    path = tmp_path / "evil.pt"
    torch.save({"spec": {}, "config": {}, "state_dict": {"w": Evil()}}, path)
    with pytest.raises(pickle.UnpicklingError):
        records.WeightsFile.load(path)


# --- the commands' outputs on copies of the committed studies, against what they printed before ------

_EXPORTED_BY = re.compile(r"exported by mnist-nas [^\n]*")
_VOLATILE = ("output", "onnx", "spec_json", "card", "exported_by")  # paths, and the versions exporting now


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _export_expectation(meta: dict, card: str | None, spec_json: str | None) -> dict:
    kept = {k: v for k, v in meta.items() if k not in _VOLATILE}
    return {"meta_sha256": _sha(json.dumps(kept, indent=1)), "card": _EXPORTED_BY.sub("exported by <versions>", card),
            "spec_json_sha256": _sha(spec_json)}


def _expected() -> dict:
    return json.loads(EXPECTED.read_text())


RECORDED = sorted(_expected())
RERECORD = "if the study or the output was meant to change, run: python tests/test_records.py --record"


def test_every_study_with_expected_outputs_is_still_committed():
    assert len(RECORDED) >= 10 and set(RECORDED) <= set(STUDIES), RERECORD


@pytest.mark.parametrize("name", RECORDED)
def test_report_prints_what_it_printed_before(name, tmp_path):
    from storage.report import report
    url = copy_study(name, tmp_path)
    want = _expected()[name]
    for as_json in (True, False):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            report(study_name=name, storage=url, as_json=as_json)
        if as_json:
            assert _sha(out.getvalue()) == want["report_json_sha256"], f"report --json differs; {RERECORD}"
        else:
            assert out.getvalue() == want["report"], RERECORD


@pytest.mark.slow  # torch.export and the ONNX export of each model: a few seconds a study
@pytest.mark.parametrize("name", RECORDED)
def test_export_verified_writes_what_it_wrote_before(name, tmp_path):
    from storage.db import StudyError
    from storage.modelfile import export_verified
    url = copy_study(name, tmp_path)
    want = _expected()[name]["export"]
    out = tmp_path / f"x-{name}.pt2"
    if "error" in want:
        with pytest.raises(StudyError) as e:
            export_verified(study_name=name, storage=url, output=out, quiet=True)
        assert f"error: {e.value}" == want["error"], RERECORD
        return
    meta = export_verified(study_name=name, storage=url, output=out, quiet=True)
    got = _export_expectation(meta, out.with_suffix(".md").read_text(), out.with_suffix(".spec.json").read_text())
    assert got == want, RERECORD


def record() -> dict:
    """What this checkout's CLI prints on copies of the committed studies (the expected outputs)."""
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in STUDIES:
            url = copy_study(name, tmp)

            def run(*args):
                r = subprocess.run([sys.executable, str(ROOT / "study.py"), *args, "--study-name", name,
                                    "--storage", url], capture_output=True, text=True, cwd=tmp)
                return r
            rj, rt = run("report", "--json"), run("report")
            assert rj.returncode == 0 and rt.returncode == 0, (rj.stderr, rt.stderr)
            out = tmp / f"x-{name}.pt2"
            ex = run("export", "--verified", "-o", str(out), "--json")
            if ex.returncode:
                export = {"error": ex.stderr.strip()}
            else:
                export = _export_expectation(json.loads(ex.stdout), out.with_suffix(".md").read_text(),
                                             out.with_suffix(".spec.json").read_text())
            expected[name] = {"report_json_sha256": _sha(rj.stdout), "report": rt.stdout, "export": export}
            print(name, "recorded", flush=True)
    return expected


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_records.py --record  (writes tests/data/committed-studies.json)")
    EXPECTED.parent.mkdir(exist_ok=True)
    EXPECTED.write_text(json.dumps(record(), indent=1) + "\n")


def test_report_counts_a_trial_stopped_by_a_signal_apart_from_one_that_failed():
    """Optuna stores both as FAIL; a stopped trial is retried on the next resume, a failed one was an
    error, and report's counts and cost say which is which."""
    import optuna
    from storage.records import trial_attrs
    from storage.report import study_cost, trial_kind
    study = optuna.create_study()
    for attrs in (trial_attrs(stopped="SIGTERM", ended="stopped by SIGTERM after 2 of 15 epochs"), {}):
        t = study.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert [trial_kind(t) for t in study.trials] == ["stopped", "failed"]
    cost = study_cost(study)
    assert (cost["stopped"], cost["failed"]) == (1, 1)
