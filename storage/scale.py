"""How reading a study costs as it grows: synthetic studies of N finished trials (made directly
through Optuna, no training), opened by `report` and by the dashboard's study page.

Each synthetic trial carries what a real 15-epoch trial of `search` carries: its sampled
parameters with their distributions, 15 intermediate values, the user attributes (spec, recipe,
per-epoch records, params, last K) and a dashboard note of the real size. One trial is made the
slow way (ask, attributes, note, tell) and then copied with fresh values, so the copies are what
`search` would have written.

    mnist-nas bench --study-scale 200,2000

prints, for each size: the time to build it, `mnist-nas report` end to end (a fresh process, as a
user runs it), a fresh dashboard's study API call (the JSON its study page loads), and with a
chromium at hand a fresh dashboard's study page in a real browser until its history plot is drawn,
then the same page for a copy of the study without intermediate values: the difference is what
optuna-dashboard's own intermediate-values plot costs in the browser.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from space.baselines import BASELINES
from space.recipe import TrainConfig
from space.spec import count_params
from storage import notes
from storage.records import set_trial_attrs


def _template(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, str]:
    """One trial made as `search` makes it: parameters, attributes, note, then told; and its note."""
    spec = BASELINES["model6"].spec
    trial = study.ask()
    trial.suggest_int("blocks", 2, 3)
    for i in range(1, 4):
        trial.suggest_int(f"b1_w{i}", 4, 16)
        trial.suggest_int(f"b2_w{i}", 4, 32)
    trial.suggest_float("lr", 1e-3, 0.2, log=True)
    trial.suggest_float("dropout", 0.0, 0.1)
    trial.suggest_categorical("scheduler", ["step", "onecycle"])
    history = []
    for e in range(1, 16):
        acc = 99.0 + 0.02 * e
        history.append({"epoch": e, "lr": 0.01, "lr_end": 0.01, "train_loss": 0.05, "train_acc": 98.9,
                        "val_loss": 0.03, "val_acc": acc, "seconds": 40.0})
        trial.report(acc, e)
    cfg = TrainConfig().to_dict()
    set_trial_attrs(trial, spec=spec.to_dict(), params=count_params(spec), config=cfg, epochs=history,
                    last_k=[h["val_acc"] for h in history[-3:]], head_rf=26, ended="completed 15 epochs")
    body = notes.trial_note(number=trial.number, spec=spec, params=count_params(spec), max_params=8000,
                            recipe=cfg, history=history, ended="completed 15 epochs; consistency score 99.26",
                            curves_url=None)
    notes.save_trial_note(trial, body)
    study.tell(trial, 99.26)
    return study.trials[-1], body


def build(url: str, n: int, name: str = "scale", seed: int = 0) -> float:
    """A study of n finished trials (7 in 10 complete, the rest pruned); seconds it took."""
    # save_note re-reads every note of the study to replace one (quadratic over 2,000 trials), so
    # the copies' notes are written the way it writes them, directly
    from optuna_dashboard._note import note_ver_key, split_body
    t0 = time.perf_counter()
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    tpl, body = _template(study)
    rng = random.Random(seed)
    trials = []
    for i in range(1, n):
        pruned = rng.random() < 0.3
        epochs = rng.randint(3, 9) if pruned else 15
        inter = {e: 97.0 + 2.3 * rng.random() for e in range(1, epochs + 1)}
        params = {k: (rng.randint(d.low, d.high) if isinstance(d, optuna.distributions.IntDistribution)
                      else rng.choice(d.choices) if isinstance(d, optuna.distributions.CategoricalDistribution)
                      else rng.uniform(d.low, d.high)) for k, d in tpl.distributions.items()}
        attrs = dict(tpl.user_attrs)
        attrs["epochs"] = attrs["epochs"][:epochs]
        trials.append(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
            value=None if pruned else inter[epochs], params=params, distributions=tpl.distributions,
            user_attrs=attrs, intermediate_values=inter))
    study.add_trials(trials)
    storage = study._storage
    for frozen in study.get_trials(deepcopy=False)[1:]:  # a note of the real size on every trial
        storage.set_study_system_attr(study._study_id, note_ver_key(frozen._trial_id), 1)
        for key, value in split_body(body.replace("Trial 0", f"Trial {frozen.number}"), frozen._trial_id).items():
            storage.set_study_system_attr(study._study_id, key, value)
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _time_dashboard(cwd: Path, url: str, name: str, in_browser: bool) -> tuple[float, float | None]:
    """(start, page): seconds until a fresh `mnist-nas dashboard` prints its URL (it loads the
    study into its caches first), then seconds for it to answer the study page's first request: the
    study API call (the JSON the page loads), or with in_browser the study page in chromium until
    its history plot is drawn (None without chromium). Fresh each time: the dashboard caches
    trials."""
    import urllib.request
    browser = _chromium() if in_browser else None
    if in_browser:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            browser = None
        if browser is None:
            return 0.0, None
    port = _free_port()
    t_start = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "study.py"), "dashboard",
                          "--storage", url, "--study-name", name, "--port", str(port)], cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        p.stdout.readline()
        started = time.perf_counter() - t_start
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        if not in_browser:
            t0 = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1?after=0", timeout=300).read()
            took = time.perf_counter() - t0
            if not json.loads(body)["trials"]:
                raise RuntimeError("the dashboard returned a study without trials")
            return started, took
        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path=browser, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = chrome.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/dashboard")  # the app's scripts, and the study list only
            page.wait_for_load_state("networkidle")
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1")
            # the history plot's points: drawn once the study's trials have arrived (its empty frame
            # shows before)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot path.point').length > 0",
                                   timeout=300_000)
            took = time.perf_counter() - t0
            chrome.close()
            return started, took
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:  # busy in a long computation for the page: it is only a bench
            p.kill()
            p.wait(timeout=30)


def run_scale(sizes: list[int], *, as_json: bool = False, keep: str | None = None) -> list[dict]:
    """Build a synthetic study of each size in a temporary SQLite file and time its readers."""
    rows = []
    for n in sizes:
        d = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mnist-nas-scale-"))
        d.mkdir(parents=True, exist_ok=True)
        db = d / f"scale{n}.db"
        db.unlink(missing_ok=True)
        url = f"sqlite:///{db}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        built = build(url, n)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "study.py"), "report",
                            "--storage", url, "--study-name", "scale"], cwd=d, capture_output=True, text=True)
        rep = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"report failed on the synthetic study: {r.stderr.strip()}")
        start, api = _time_dashboard(d, url, "scale", in_browser=False)
        _, page = _time_dashboard(d, url, "scale", in_browser=True)
        page_bare = None
        if page is not None:  # no browser: nothing to compare, no copy to make
            # Where the page's time goes: the same study without its intermediate values, so the
            # dashboard's intermediate-values plot (one SVG line per trial, with a legend) has
            # nothing to draw. A diagnostic copy, never a study anyone searches.
            bare = d / f"scale{n}-no-intermediate.db"
            shutil.copyfile(db, bare)
            with sqlite3.connect(bare) as con:
                con.execute("DELETE FROM trial_intermediate_values")
            con.close()
            _, page_bare = _time_dashboard(d, f"sqlite:///{bare}", "scale", in_browser=True)
        row = {"trials": n, "db_mb": round(db.stat().st_size / 2**20, 1), "build_s": round(built, 1),
               "report_s": round(rep, 2), "dashboard_start_s": round(start, 2), "dashboard_api_s": round(api, 2),
               "dashboard_page_s": None if page is None else round(page, 2),
               "dashboard_page_without_intermediate_values_s": None if page_bare is None else round(page_bare, 2)}
        rows.append(row)
        if not as_json:
            page_txt = ("no chromium" if page is None else
                        f"{page:.2f}s ({page_bare:.2f}s for a copy without intermediate values)")
            print(f"{n:>6} trials ({row['db_mb']} MB, built in {built:.0f}s): report {rep:.2f}s, "
                  f"dashboard start {start:.2f}s, then study API {api:.2f}s, study page in chromium {page_txt}", flush=True)
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    if as_json:
        print(json.dumps({"study_scale": rows, "cpus": os.cpu_count()}))
    return rows
