"""`find` end to end on tiny data: search, confirm, verify, export; resumed; failing honestly."""
import json

import optuna
import pytest

from storage.modelfile import load_model_file
from tests.conftest import make_tiny_mnist, read_lines_until
from tests.test_study import load

pytestmark = pytest.mark.slow  # every test runs the CLI

LEGS = ["--data-dir", "data", "--epochs", "2", "--last-k", "1", "--seeds", "2", "--top", "2", "--workers", "1",
        "--max-params", "6000", "--n-trials", "3", "--no-enqueue"]  # find's default: search in legs
TINY = LEGS + ["--search-all"]  # the whole search first, then the top 2


def test_find_runs_three_stages_exports_the_winner_and_resumes_without_repeating(cli, tmp_path):
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    r = cli("find", "--study-name", "f", "--target", "0", "-o", "models/win.pt2", *TINY, cwd=tmp_path)
    out = r.stdout
    for stage in ("1/3 search", "2/3 confirm", "3/3 verify"):
        assert stage in out
    assert out.count("cost so far: search ") == 3  # after each stage, as it goes
    assert "candidates that met the test set: 1" in out and "wrote models/win.pt2" in out
    study = load(tmp_path, "f")
    assert len(study.trials) == 3
    winner = study.user_attrs["find:winner"]
    confirm = study.user_attrs[f"find:confirm:{winner}"]
    assert len(confirm["scores"]) == 2 and confirm["robust"] == min(confirm["scores"])
    verified = study.user_attrs[f"find:verify:{winner}"]
    assert verified["passed"] and sorted(verified["results"]) == ["1", "2"]
    # where each run trained is recorded: the trials, each confirm seed and each verify seed
    assert {t.user_attrs["device"] for t in study.trials if "spec" in t.user_attrs} == {"cpu"}
    assert confirm["devices"] == {"10001": "cpu"} and verified["devices"] == {"1": "cpu", "2": "cpu"}
    # when each stage finished (trials carry Optuna's own times): confirm before verify, both UTC
    from datetime import datetime
    done = [datetime.fromisoformat(r["finished"]) for r in (confirm, verified)]
    assert all(d.utcoffset().total_seconds() == 0 for d in done) and done[0] <= done[1]
    _, meta = load_model_file(tmp_path / "models" / "win.pt2")
    assert meta["trial"] == winner and meta["verify"] == verified and meta["tests_used"] == [winner]
    assert meta["test_acc"] == verified["results"]["1"][-1]
    assert (tmp_path / "models" / "win.onnx").is_file()
    # shipped with its spec JSON and a card: architecture, verify table, recipe
    assert json.loads((tmp_path / "models" / "win.spec.json").read_text()) == meta["spec"]
    card = (tmp_path / "models" / "win.md").read_text()
    assert "Where each verify seed trained: 1: cpu, 2: cpu" in card and "seed 1, on cpu (seed 1 of the verify stage)" in card
    assert f"trial {winner}" in card and "| seed | best |" in card and "**PASS**" in card and "| batch_size |" in card
    # export --verified writes the same model and card from the study alone, under any name
    exp = cli("export", "--study-name", "f", "--verified", "-o", "again.pt2", cwd=tmp_path)
    assert f"trial {winner}" in exp.stdout and "retrain" not in exp.stdout
    _, again = load_model_file(tmp_path / "again.pt2")
    assert again == meta
    assert (tmp_path / "again.onnx").is_file() and (tmp_path / "again.md").read_text() == card.replace("win", "again")
    for args, says in ((["--trial", str(study.user_attrs["find:candidates"][-1])], "was not verified by `find`"),
                       (["--trial", "x"], "trial number or 'best'"), (["-o", "m.onnx"], "-o must name a .pt2 file"),
                       (["--onnx", "m.pt2"], "--onnx must name a .onnx file")):
        out = ["-o", "n.pt2"] if "-o" not in args else []
        b = cli("export", "--study-name", "f", "--verified", *out, *args, cwd=tmp_path, check=False)
        assert b.returncode == 2 and b.stderr.startswith("error: ") and says in b.stderr, b.stderr
        assert not (tmp_path / "n.pt2").exists() and not (tmp_path / "m.onnx").exists()
    # the same command again: every stage is found done, nothing is retrained, the same winner
    again = cli("find", "--study-name", "f", "--target", "0", "-o", "models/win.pt2", *TINY, cwd=tmp_path)
    assert "search: done before" in again.stdout and f"verify: trial {winner} verified before" in again.stdout
    assert "retraining" not in again.stdout
    # and the stages' times are the ones they were made at, not the rerun's
    assert load(tmp_path, "f").user_attrs[f"find:confirm:{winner}"]["finished"] == confirm["finished"]
    assert len(load(tmp_path, "f").trials) == 3
    # report shows the confirmed and verified trials and what each stage cost
    r = cli("report", "--study-name", "f", cwd=tmp_path)
    assert "find: confirmed" in r.stdout and "PASS" in r.stdout and f"winner: trial {winner}" in r.stdout
    assert f"{verified['finished'][:10]} " in r.stdout  # the verify row says when it was verified
    assert "\ncost: 3 trials" in r.stdout and "per verified model" in r.stdout
    cost = json.loads(cli("report", "--study-name", "f", "--json", cwd=tmp_path).stdout)["cost"]
    epochs = sum(e["seconds"] for t in study.trials for e in t.user_attrs.get("epochs", []))
    assert abs(cost["search_core_hours"] * 3600 - epochs) < 1e-6 and cost["trials"] == 3
    assert cost["confirm"]["candidates"] == 2 and cost["confirm"]["core_hours"] > 0 and not cost["confirm"]["unrecorded"]
    assert cost["verify"]["candidates"] == 1 and cost["verify"]["core_hours"] > 0
    assert cost["core_hours_per_verified_model"] == cost["total_core_hours"] > cost["search_core_hours"]
    # find's wall time runs past the search's: confirm and verify came after it (and it is said)
    assert cost["find_wall_hours"] > cost["wall_hours"] > 0 and ", find " in r.stdout.split("\ncost:")[1]
    # stopped mid-stage: the seeds finished before are kept, only the missing ones are retrained
    verified, other = study.user_attrs[f"find:verify:{winner}"], study.user_attrs["find:candidates"][-1]
    confirmed = study.user_attrs[f"find:confirm:{other}"]
    study.set_user_attr(f"find:partial:verify:{winner}", {k: verified[k] for k in ("epochs", "k", "target", "seeds")}
                        | {"results": {"1": verified["results"]["1"]}, "core_seconds": 1.0})
    study.set_user_attr(f"find:partial:confirm:{other}", {"epochs": 2, "k": 1, "results": {}, "core_seconds": 0.0})
    storage = study._storage
    for key in (f"find:verify:{winner}", f"find:confirm:{other}", "find:winner"):
        storage.set_study_user_attr(study._study_id, key, None)
    import sqlite3
    with sqlite3.connect(tmp_path / "studies" / "f.db") as db:  # Optuna cannot delete a user attribute
        db.execute("DELETE FROM study_user_attributes WHERE key IN (?, ?, ?)",
                   (f"find:verify:{winner}", f"find:confirm:{other}", "find:winner"))
    resumed = cli("find", "--study-name", "f", "--target", "0", "-o", "models/win.pt2", *TINY, cwd=tmp_path).stdout
    assert f"confirm: trial {other}" in resumed and "retraining with seeds 10001 on" in resumed
    assert "seed 2 on all 200 training images, 2 epochs" in resumed and "(seed 1 done in an earlier run)" in resumed
    assert "seed 1 epoch" not in resumed and "seed 2 epoch  2: test" in resumed
    after = load(tmp_path, "f").user_attrs
    assert after[f"find:verify:{winner}"]["results"]["1"] == verified["results"]["1"]
    assert after[f"find:confirm:{other}"]["results"].keys() == confirmed["results"].keys()
    # a row from a run with other settings does not hide a partial record made with this run's
    study = load(tmp_path, "f")
    kept = after[f"find:confirm:{other}"]["results"]
    study.set_user_attr(f"find:confirm:{other}", {"epochs": 99, "k": 1, "results": {"10001": [1.0] * 99}})
    study.set_user_attr(f"find:partial:confirm:{other}", {"epochs": 2, "k": 1, "results": kept, "core_seconds": 1.0})
    again = cli("find", "--study-name", "f", "--target", "0", "-o", "models/win.pt2", *TINY, cwd=tmp_path).stdout
    assert f"confirm: trial {other} (" not in again  # nothing retrained
    assert load(tmp_path, "f").user_attrs[f"find:confirm:{other}"]["results"] == kept


def test_find_fails_honestly_when_no_candidate_holds_the_target(cli, tmp_path):
    """In legs (the default): each trial at or above the bar pauses the search, is confirmed and
    verified, fails, and the search goes on, until --n-trials; judged once each, exit 1."""
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    r = cli("find", "--study-name", "g", "--target", "100", "--min-robust", "0", "--max-seeds", "2",
            "--train-limit", "20", "-o", "m.pt2", *LEGS, "--top", "3", cwd=tmp_path, check=False)
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert out.count("no candidate held yet: searching on") == 2 and "(leg 3)" in out and "(leg 4)" not in out
    assert out.count("paused: trial ") == 2  # the third trial fills --n-trials: the search is over, not paused
    assert "verified before" not in out  # a leg shows only the candidates it verified
    assert "candidates that met the test set: 3" in out and "FAIL: none of the 3" in out
    assert not (tmp_path / "m.pt2").exists()
    study = load(tmp_path, "g")
    assert len(study.trials) == 3 and study.user_attrs["find:searched"] == 3
    assert sorted(study.user_attrs["find:tests_used"]) == sorted(study.user_attrs["find:candidates"]) == [0, 1, 2]
    # one worker: the seeds meet the test set one at a time, and the first below the target ends the
    # verdict (--seeds 2 asked for two; the second would have been a test-set use for nothing)
    rows = {c: study.user_attrs[f"find:verify:{c}"] for c in (0, 1, 2)}
    assert all(sorted(r["results"]) == ["1"] and not r["passed"] for r in rows.values()), rows
    assert "test-set uses: 3 verify seeds" in cli("report", "--study-name", "g", cwd=tmp_path).stdout
    # a seed stopped midway met the test set too: a resumed verify that needs it no more keeps it counted
    first = rows[0]
    study.set_user_attr("find:partial:verify:0", {k: first[k] for k in ("epochs", "k", "target", "seeds")}
                        | {"results": first["results"], "core_seconds": 1.0, "met": [1, 2]})
    import sqlite3
    with sqlite3.connect(tmp_path / "studies" / "g.db") as db:  # Optuna cannot delete a user attribute
        db.execute("DELETE FROM study_user_attributes WHERE key = ?", ("find:verify:0",))
    again = cli("find", "--study-name", "g", "--target", "100", "--min-robust", "0", "--max-seeds", "2",
                "--train-limit", "20", "-o", "m.pt2", *LEGS, "--top", "3", cwd=tmp_path, check=False)
    assert "seed 2 epoch" not in again.stdout, again.stdout  # nothing trained: seed 1 decides
    assert load(tmp_path, "g").user_attrs["find:verify:0"]["stopped"] == [2]
    assert "test-set uses: 4 verify seeds" in cli("report", "--study-name", "g", cwd=tmp_path).stdout
    # in legs --top caps the candidates that may meet the test set: with 1, the first failure ends it
    r = cli("find", "--study-name", "g1", "--target", "100", "--min-robust", "0", "--max-seeds", "2",
            "--train-limit", "20", "-o", "m.pt2", *LEGS, "--top", "1", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "1 of find's candidates met the test set, --top 1: no more meet it" in r.stdout
    assert "(leg 2)" not in r.stdout and len(load(tmp_path, "g1").trials) == 1
    # the bar keeps a trial below it from pausing the search: nothing to confirm, no test-set use
    r = cli("find", "--study-name", "g2", "--target", "100", "-o", "m.pt2", *LEGS, cwd=tmp_path, check=False)
    assert r.returncode == 1 and "FAIL: no trial under 6,000 parameters reached the bar 99.85" in r.stdout
    assert "nothing to confirm" in r.stdout and "find:tests_used" not in load(tmp_path, "g2").user_attrs
    # a failed candidate is not exported as verified, nor is a winner there is none of
    for trial, says in ((str(study.user_attrs["find:candidates"][0]), "failed `find`'s verify stage"),
                        ("best", "has no model that passed")):
        b = cli("export", "--study-name", "g", "--verified", "--trial", trial, "-o", "m.pt2", cwd=tmp_path, check=False)
        assert b.returncode == 2 and says in b.stderr and not (tmp_path / "m.pt2").exists(), b.stderr


def test_min_robust_keeps_weak_candidates_away_from_the_test_set(cli, tmp_path):
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    r = cli("find", "--study-name", "h", "--target", "0", "--min-robust", "100", "-o", "m.pt2", *TINY,
            cwd=tmp_path, check=False)
    assert r.returncode == 1, r.stderr
    assert r.stdout.count("is below --min-robust 100.00 (the test set is not used)") == 2
    assert "candidates that met the test set: 0" in r.stdout
    assert "FAIL: none of the 0 verified candidates" in r.stdout and "2 below --min-robust were not verified" in r.stdout
    study = load(tmp_path, "h")
    assert study.user_attrs.get("find:tests_used", []) == []
    assert not any(k.startswith("find:verify") or k.startswith("find:partial:verify") for k in study.user_attrs)
    # the race: a candidate whose search score is below the bar already runs no confirm seed at all
    assert r.stdout.count("not retrained: its search score") == 2 and "retraining with seeds" not in r.stdout
    assert all(not study.user_attrs[f"find:confirm:{t}"]["results"] for t in study.user_attrs["find:candidates"])
    assert all("stopped" in study.user_attrs[f"find:confirm:{t}"] for t in study.user_attrs["find:candidates"])
    assert cli("report", "--study-name", "h", cwd=tmp_path).stdout.count("stopped by the confirm race: its search score") == 2
    # the same study with the bar lowered confirms them now, and verifies
    r = cli("find", "--study-name", "h", "--target", "0", "--min-robust", "0", "-o", "m.pt2", *TINY, cwd=tmp_path)
    assert "candidates that met the test set: 1" in r.stdout and "retraining with seeds" in r.stdout
    again = cli("find", "--study-name", "h", "--target", "0", "--min-robust", "0", "-o", "m.pt2", *TINY, cwd=tmp_path)
    assert "retraining with seeds" not in again.stdout  # confirmed rows are kept
    for bad in ("nan", "-1", "101"):
        b = cli("find", "--study-name", "h", "--min-robust", bad, "-o", "m.pt2", *TINY, cwd=tmp_path, check=False)
        assert b.returncode == 2 and b.stderr.startswith("error: --min-robust must be a percentage"), b.stderr


def test_front_across_studies_marks_verified_trials_and_refuses_bad_pairs(cli, tmp_path):
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    # find in legs (the default): its first trial reaches the bar (0 here), the search pauses, and
    # that trial is confirmed, verified and exported; the rest of --n-trials is never run
    found = cli("find", "--study-name", "a", "--target", "0", "-o", "a.pt2", *LEGS, cwd=tmp_path).stdout
    assert "paused: trial 0 scores" in found and "search: done" not in found and "(leg 2)" not in found
    assert found.count("cost so far: search ") == 3 and "wrote a.pt2" in found
    a = load(tmp_path, "a")
    assert len(a.trials) == 1 and a.user_attrs["find:candidates"] == [0] == a.user_attrs["find:tests_used"]
    assert "find:searched" not in a.user_attrs  # paused, not searched to --n-trials
    # the same command again: the winner is found, nothing is searched, trained or judged anew
    again = cli("find", "--study-name", "a", "--target", "0", "-o", "a.pt2", *LEGS, cwd=tmp_path).stdout
    assert "search: paused (1 finished trials of --n-trials 3): trial 0 passed verify before" in again
    assert "verify: trial 0 verified before" in again and "epoch  1:" not in again and len(load(tmp_path, "a").trials) == 1
    cli("search", "--study-name", "b", "--data-dir", "data", "--epochs", "2", "--n-trials", "2", "--no-enqueue",
        "--max-params", "3000", cwd=tmp_path)
    pairs = ["--study", f"a=sqlite:///{tmp_path}/studies/a.db", "--study", f"b=sqlite:///{tmp_path}/studies/b.db"]
    r = cli("front", *pairs, "-o", "docs/front.png", cwd=tmp_path)
    assert "front over 3 complete trials of 2 studies" in r.stdout
    assert (tmp_path / "docs" / "front.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads(cli("front", *pairs, "--json", cwd=tmp_path).stdout)["front"]
    attrs = load(tmp_path, "a").user_attrs
    winner = attrs["find:winner"]
    assert all(r["verified"] is None for r in rows if (r["study"], r["trial"]) != ("a", winner))
    # confirmed trials carry their seed-robust score; the others (study b never ran find) none
    for row in rows:
        confirm = attrs.get(f"find:confirm:{row['trial']}") if row["study"] == "a" else None
        assert row["robust"] == (confirm["robust"] if confirm else None)
    assert "robust" in r.stdout and ("confirmed across these studies" in r.stdout) == any(
        k.startswith("find:confirm:") for k in attrs)
    assert any(r["verified"] is True for r in rows) or all(r["trial"] != winner or r["study"] != "a" for r in rows)
    params = [r["params"] for r in rows]
    scores = [r["score"] for r in rows]
    assert params == sorted(params) and scores == sorted(scores)  # a front: more parameters only for more accuracy
    bad = cli("front", "--study", "no-equals-sign", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --study takes NAME=STORAGE_URL")


def test_sigterm_to_find_alone_during_confirm_stops_its_seed_processes_cleanly(cli, tmp_path):
    """A `find` retraining seeds in 2 processes, SIGTERM to the parent only (as `kill PID` does):
    it stops in seconds with exit 130 and no traceback, and its seed processes are gone (they
    share its stdout: communicate() returns only once every one has closed it)."""
    import signal
    import time
    make_tiny_mnist(tmp_path / "data", n_train=3000, n_test=40)
    args = ["--data-dir", "data", "--epochs", "15", "--seeds", "3", "--top", "1", "--workers", "2",
            "--max-params", "6000", "--n-trials", "1", "--no-enqueue", "--min-robust", "0"]
    p = cli.popen("find", "--study-name", "f", "-o", "m.pt2", *args, cwd=tmp_path, start_new_session=True)
    read_lines_until(p, lambda lines: "seed 10001 epoch  2:" in lines[-1],  # confirm's seed processes
                     timeout=300, what="epoch 2 of confirm's seed processes")
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 30, (out, err)
    assert "Traceback" not in err and "interrupted" in err


def test_find_under_a_smaller_budget_than_its_search_hands_back_only_a_model_under_it(cli, tmp_path):
    """A study searched under 6,000 asked for its best under a smaller budget: only trials under that
    budget are confirmed, verified and exported; a budget no trial is under is one line, exit 2."""
    make_tiny_mnist(tmp_path / "data", n_train=200, n_test=40)
    cli("find", "--study-name", "b", "--target", "0", "-o", "big.pt2", *TINY, cwd=tmp_path)
    complete = [t for t in load(tmp_path, "b").trials if t.state == optuna.trial.TrialState.COMPLETE]
    smallest = min(t.user_attrs["params"] for t in complete)
    with_budget = lambda b: [str(b) if prev == "--max-params" else a for prev, a in zip([""] + TINY, TINY)]
    r = cli("find", "--study-name", "b", "--target", "0", "-o", "small.pt2", *with_budget(smallest + 1), cwd=tmp_path)
    over = sum(t.user_attrs["params"] > smallest for t in complete)
    assert over and f"only trials under --max-params {smallest + 1:,} are candidates ({over} complete" in r.stdout
    _, meta = load_model_file(tmp_path / "small.pt2")
    assert meta["params"] == smallest
    assert "search: done before" in r.stdout  # the search is not rerun for the smaller budget
    assert load(tmp_path, "b").user_attrs["max_params"] == 6000  # the study's own budget is not rewritten
    r = cli("find", "--study-name", "b", "--target", "0", "-o", "none.pt2", *with_budget(smallest), cwd=tmp_path,
            check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert f"no complete trial under --max-params {smallest:,}" in r.stderr and not (tmp_path / "none.pt2").exists()
