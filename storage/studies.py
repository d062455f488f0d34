"""Storage URLs, opening studies with clean errors, the artifact store beside the database."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from pathlib import Path

import optuna
import warnings

from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

# Heartbeats are marked experimental in Optuna 5, yet are exactly what we want: say it once, here.
warnings.filterwarnings("ignore", category=ExperimentalWarning)


class StudyError(Exception):
    """Bad storage URL, unknown study, unknown or incomplete trial: one line, exit 2."""


STUDY_NAME_MAX = 200  # characters: studies/<name>.artifacts must stay a legal file name (255 bytes)


def check_study_name(study_name) -> str:
    """The one check of a study name. A name becomes file names (studies/<name>.db,
    studies/<name>.artifacts/), so one that could leave the studies folder or is no file name at
    all is refused in one line: empty, '.' or '..', holding '/' or '\\' (a path, absolute or not),
    a NUL or another control character, or longer than STUDY_NAME_MAX. Every command reaches it
    through storage_url before it reads or writes anything.

    >>> check_study_name("find-5k")
    'find-5k'
    >>> check_study_name("../../x")
    Traceback (most recent call last):
    ...
    storage.studies.StudyError: --study-name must be a plain name, not a path or a special name: got '../../x' (letters, digits and - _ . are safe)
    """
    if not isinstance(study_name, str) or not study_name.strip():
        raise StudyError("--study-name must not be empty")
    if len(study_name) > STUDY_NAME_MAX:
        raise StudyError(f"--study-name must be at most {STUDY_NAME_MAX} characters, got {len(study_name)}")
    if study_name in (".", "..") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in study_name):
        shown = repr(study_name if len(study_name) <= 60 else study_name[:60] + "...")
        raise StudyError(f"--study-name must be a plain name, not a path or a special name: got {shown} "
                         f"(letters, digits and - _ . are safe)")
    return study_name


def default_url(study_name: str) -> str:
    return f"sqlite:///studies/{check_study_name(study_name)}.db"


def storage_url(*, study_name: str, storage: str | None = None) -> str:
    """The URL a study lives at: the one given, else the default SQLite file for its name. The
    name is checked here (check_study_name) whether or not a storage is given."""
    check_study_name(study_name)
    if storage is not None and not storage.strip():
        raise StudyError("--storage must not be empty (leave it out for the default SQLite file)")
    return storage or default_url(study_name)


def safe_url(url: str) -> str:
    """The URL for messages, with any password masked."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


HEARTBEAT_GRACE_ENV = "MNIST_NAS_HEARTBEAT_GRACE"


def heartbeat_grace() -> int:
    """Seconds without a heartbeat after which a RUNNING trial counts as dead: 90, or the value of
    MNIST_NAS_HEARTBEAT_GRACE (tests use a few seconds; the heartbeat beats 3 times per grace)."""
    raw = os.environ.get(HEARTBEAT_GRACE_ENV, "").strip()
    if not raw:
        return 90
    try:
        grace = int(raw)
    except ValueError:
        grace = 0
    if grace < 3:
        raise StudyError(f"{HEARTBEAT_GRACE_ENV} must be a whole number of seconds >= 3, got {raw!r}")
    return grace


def open_storage(url: str, create: bool = False, heartbeat: int | None = None,
                 grace: int | None = None) -> RDBStorage:
    """An RDBStorage with heartbeats, so a trial whose process died is failed and retried
    (grace: heartbeat_grace(), heartbeat: a third of it).

    RetryHeartbeatStaleTrialCallback is Optuna 5's name for RetryFailedTrialCallback (renamed in
    4.9): a stale RUNNING trial becomes FAIL and a copy with the same parameters is enqueued.

    create=False refuses a SQLite file that does not exist (SQLAlchemy would silently create an
    empty one, and a typo would look like an empty study)."""
    grace = grace or heartbeat_grace()
    heartbeat = heartbeat or max(1, grace // 3)
    path = _sqlite_path(url)
    engine_kwargs = {}
    if path is not None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise StudyError(f"no study database at {path} (storage {url})")
        engine_kwargs = {"connect_args": {"timeout": 60}}  # workers share one file
    else:  # a server: test pooled connections before use, so a restarted server is reconnected to
        engine_kwargs = {"pool_pre_ping": True}
    if not create:
        _require_optuna_tables(url, path)  # RDBStorage would create them: a reader must not write
    try:
        return ClaimSafeRDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as e:  # SQLAlchemy or driver errors: a URL we cannot open
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudyError(f"cannot open storage {safe_url(url)}: {msg}") from None


_held: dict[Path, int] = {}  # folder -> depth of this process's flock on it (re-entrant)
_held_guard = threading.RLock()


@contextlib.contextmanager
def _folder_lock(path: Path):
    """An exclusive flock on the folder holding a SQLite file, re-entrant within a process (a
    second open()+flock of the same folder by the same process would wait for itself forever)."""
    import fcntl
    folder = (path.parent if str(path.parent) else Path(".")).resolve()
    with _held_guard:  # threads of one process (the heartbeat thread, say) take turns here
        if _held.get(folder):
            _held[folder] += 1
            try:
                yield
            finally:
                _held[folder] -= 1
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _held[folder] = 1
            yield
        finally:
            _held.pop(folder, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextlib.contextmanager
def creation_lock(url: str):
    """Serialise study creation on one SQLite file: two `search`es started at the same moment on a
    new file would otherwise race to create the schema (the loser failed with exit 2). The lock is
    an flock on the database's folder, so no extra file is left behind. Other URLs: no-op (the
    server serialises)."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    with _folder_lock(path):
        yield


def storage_outage(e: BaseException | None) -> BaseException | None:
    """The error of a database that is away (a server restarting, a network cut): worth
    waiting out. Looks along the exception's chain: Optuna wraps SQLAlchemy's errors in
    StorageInternalError, and Optuna 5.0's _run_trial, when the server is away both for the trial's
    tell and the re-read after it, raises UnboundLocalError ('updated_state') from its finally
    block, with the storage error as its context. None for any other error."""
    import sqlalchemy.exc as sa
    for _ in range(6):
        if e is None:
            return None
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)) or (
                isinstance(e, sa.DBAPIError) and e.connection_invalidated):
            return e
        e = e.__cause__ or e.__context__
    return None


class ClaimSafeRDBStorage(RDBStorage):
    """RDBStorage whose trial state changes are atomic on SQLite too, and whose heartbeat outlives a
    database that is briefly away.

    Optuna claims a WAITING trial (an enqueued point, a heartbeat retry) by reading its state and
    writing RUNNING in one session, and fails a stale trial the same way. On PostgreSQL the read is
    SELECT ... FOR UPDATE and the second claimant waits, then sees RUNNING. SQLite ignores FOR
    UPDATE: two workers starting together both read WAITING and both ran the same trial (seen:
    retry trial 21 of results/find-5k.db, trained twice); two workers failing one stale trial both
    enqueue a retry. Here every state change on a SQLite file holds the database folder's flock,
    so read-check-write is one step for all processes of the machine (SQLite is one machine's
    storage). The lock is held for one short transaction, never for a training run.

    Optuna's heartbeat thread dies on the first error, so a trial that outlived a server restart
    would later be failed as dead while it still runs; here a beat that cannot reach the server is
    skipped (the next one, a third of the grace period later, tries again).
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as e:
            if storage_outage(e) is None:
                raise

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (a heartbeat older than the grace period), plus RUNNING trials that
        never recorded a heartbeat and started more than the grace period ago. Optuna skips those,
        so a worker that lost the server between creating its trial and its first beat (a restart
        at that moment: the beat is skipped, then the trial's next write fails) left the trial
        RUNNING for ever, and every worker waited for it to end (seen in CI, the restart test).
        A live trial beats as it starts, so one without any beat after the grace period is dead."""
        import datetime
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        # Optuna 5 stores the worker's clock as naive UTC (column datetime_start)
        cutoff = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                  - datetime.timedelta(seconds=grace))
        with _create_scoped_session(self.scoped_session, True) as session:
            never_beat = (session.query(models.TrialModel.trial_id)
                          .filter(models.TrialModel.study_id == study_id,
                                  models.TrialModel.state == optuna.trial.TrialState.RUNNING,
                                  ~models.TrialModel.heartbeats.any(),
                                  models.TrialModel._datetime_start_utc < cutoff).all())
        return stale + [tid for (tid,) in never_beat if tid not in stale]

    def set_trial_state_values(self, trial_id, state, values=None):
        path = _sqlite_path(self.url)
        if path is None:
            return super().set_trial_state_values(trial_id, state, values)
        with _folder_lock(path):
            return super().set_trial_state_values(trial_id, state, values)


def _optuna_tables() -> set[str]:
    from optuna.storages._rdb import models
    return set(models.BaseModel.metadata.tables)


def _require_optuna_tables(url: str, path: Path | None) -> None:
    """Refuse, without writing a byte, a database that does not already hold Optuna's schema."""
    if path is not None:
        import sqlite3
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise StudyError(f"{path} holds no Optuna studies (not a SQLite database)")
        try:  # read-only and immutable-free: mode=ro cannot create or change the file
            con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            finally:
                con.close()
        except sqlite3.Error as e:
            raise StudyError(f"cannot read {path}: {e}") from None
    else:
        try:
            import sqlalchemy
            engine = sqlalchemy.create_engine(url)
            try:
                tables = set(sqlalchemy.inspect(engine).get_table_names())
            finally:
                engine.dispose()
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudyError(f"cannot open storage {safe_url(url)}: {msg}") from None
    missing = _optuna_tables() - tables
    if missing:
        where = path if path is not None else safe_url(url)
        raise StudyError(f"{where} holds no Optuna studies (missing tables: {', '.join(sorted(missing)[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}); read-only commands never create them")


def load_study(*, study_name: str, storage: str | None = None) -> optuna.Study:
    """An existing study, read-only: a missing file, a database without Optuna's tables or an
    unknown name is a StudyError, and nothing is created."""
    url = storage_url(study_name=study_name, storage=storage)
    rdb = open_storage(url)
    # the names only: get_all_study_summaries reads every trial of every study to count them
    # (11 s of a 19 s report on a study of 2,000 trials, `bench --study-scale`)
    names = [s.study_name for s in rdb.get_all_studies()]
    if study_name not in names:
        have = ", ".join(names) if names else "none"
        raise StudyError(f"no study named {study_name!r} in {safe_url(url)} (studies there: {have})")
    return optuna.load_study(study_name=study_name, storage=rdb)


def stored_settings(*, study_name: str, storage: str | None = None) -> dict | None:
    """An existing study's user attributes (where mnist-nas keeps its settings), read without
    writing; None when the storage or the study does not exist yet (a search will create them)."""
    url = storage_url(study_name=study_name, storage=storage)
    try:
        rdb = open_storage(url)
    except StudyError:  # no file yet, or one without Optuna's tables: nothing stored to keep
        return None
    try:
        return rdb.get_study_user_attrs(rdb.get_study_id_from_name(study_name))
    except KeyError:
        return None


def rank_key(t: optuna.trial.FrozenTrial) -> tuple:
    """The one order of complete trials, best first: consistency score down (the first objective
    under pareto too), then fewer parameters, then the earlier trial."""
    return (-t.values[0], t.user_attrs.get("params", 0), t.number)


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(complete, key=rank_key)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best trial by rank_key: what search's summary, report and export all name."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def get_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """'best' (see best_trial) or a trial number, which must be COMPLETE."""
    if which == "best":
        best = best_trial(study)
        if best is None:
            raise StudyError(f"study {study.study_name!r} has no complete trial yet")
        return best
    try:
        number = int(which)
    except ValueError:
        raise StudyError(f"--trial must be a trial number or 'best', got {which!r}") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise StudyError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state != optuna.trial.TrialState.COMPLETE:
        why = t.user_attrs.get("ended", "")
        raise StudyError(f"trial {number} is {t.state.name}, not COMPLETE{f' ({why})' if why else ''}")
    return t


def artifact_dir(url: str, study_name: str) -> Path:
    """Beside a SQLite file: studies/x.db -> studies/x.artifacts/. Other URLs: ./studies/<name>.artifacts."""
    path = _sqlite_path(url)
    if path is not None:
        return path.with_suffix(".artifacts")
    return Path("studies") / f"{check_study_name(study_name)}.artifacts"


def verified_weights_path(url: str, study_name: str, trial: int, seed: int) -> Path:
    """Where `find` keeps the weights of a verify run (one trial, one seed, trained on all 60,000)."""
    return artifact_dir(url, study_name) / "find" / f"trial{trial}-seed{seed}.pt"


class ArtifactSink:
    """Stores a trial's final weights (spec + config + state_dict) in Optuna's artifact store."""

    def __init__(self, url: str, study_name: str):
        from optuna.artifacts import FileSystemArtifactStore
        self.dir = artifact_dir(url, study_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(self.dir))

    def save_weights(self, trial: optuna.Trial, result) -> str:
        import torch
        from optuna.artifacts import upload_artifact
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}-weights.pt"
            torch.save({"spec": result.spec.to_dict(), "config": result.config.to_dict(),
                        "state_dict": result.model.state_dict()}, path)
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path),
                                          study_or_trial=trial)
        trial.set_user_attr("weights_artifact", artifact_id)
        return artifact_id

    def load_weights(self, trial: optuna.trial.FrozenTrial) -> dict:
        import torch
        artifact_id = trial.user_attrs.get("weights_artifact")
        if not artifact_id:
            raise StudyError(f"trial {trial.number} has no stored weights")
        try:
            with self.store.open_reader(artifact_id) as f:
                return torch.load(io.BytesIO(f.read()), weights_only=True)
        except Exception as e:
            raise StudyError(f"cannot read weights of trial {trial.number} from {self.dir}: {type(e).__name__}") from None


class _TrialKeyIndex:
    """The study's system attributes grouped by trial id, built once per dict that optuna-dashboard
    serialises. Its study page looks up each trial's note ("dashboard:<id>:note_...") and
    dashboard-made artifacts ("dashboard:artifacts:<id>:...") by scanning *all* the study's system
    attributes, once per trial: quadratic, 30 s for the study API of 2,000 noted trials
    (`bench --study-scale`). The same functions run here on just that trial's keys."""

    def __init__(self):
        self._of, self._index = None, {}

    def keys_of(self, system_attrs: dict, trial_id: int) -> dict:
        if system_attrs is not self._of:
            index: dict[int, dict] = {}
            for key, value in system_attrs.items():
                if not key.startswith("dashboard:"):
                    continue
                head = key[len("dashboard:artifacts:"):] if key.startswith("dashboard:artifacts:") else key[10:]
                number = head.split(":", 1)[0]
                if number.isdigit():
                    index.setdefault(int(number), {})[key] = value
            self._of, self._index = system_attrs, index
        return self._index.get(trial_id, {})


def faster_dashboard_pages() -> None:
    """Make optuna-dashboard's study page linear in its trials (see _TrialKeyIndex); the results
    are those of its own functions (tests/test_study.py compares them on a real study)."""
    from optuna_dashboard import _serializer
    if getattr(_serializer, "_mnist_nas_indexed", False):
        return
    import types
    note_of, artifacts_of = _serializer.note.get_note_from_system_attrs, _serializer.list_trial_artifacts
    index = _TrialKeyIndex()

    def get_note_from_system_attrs(system_attrs, trial_id):
        return note_of(system_attrs if trial_id is None else index.keys_of(system_attrs, trial_id), trial_id)

    def list_trial_artifacts(study_system_attrs, trial_system_attrs, trial):
        return artifacts_of(index.keys_of(study_system_attrs, trial._trial_id), trial_system_attrs, trial)

    # the serializer calls note.get_note_from_system_attrs: give it a copy of the module with ours
    note = types.ModuleType(_serializer.note.__name__)
    note.__dict__.update(_serializer.note.__dict__)
    note.get_note_from_system_attrs = get_note_from_system_attrs
    _serializer.note = note
    _serializer.list_trial_artifacts = list_trial_artifacts
    _serializer._mnist_nas_indexed = True


READ_METHODS = ("GET", "HEAD", "OPTIONS")  # what a read-only dashboard answers; the page's writes are POST/PUT/DELETE


def read_only(app):
    """The dashboard app, refusing every request that would change the storage or the artifact
    store. optuna-dashboard 0.21 has no read-only mode: its page can delete or rename a study,
    create one, write notes, tell or skip trials, set user attributes and upload or delete artifacts,
    all through POST, PUT or DELETE (and its schema migration page through POST). Each of those gets
    403 and a reason the page shows; reading is unchanged."""
    import json

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": "this dashboard is read-only: mnist-nas dashboard changes nothing "
                                     "(start it with --allow-writes to let the page change the study)"}).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return guarded


def _listen(host: str, port: int):
    """A WSGI server bound to host:port, or one StudyError line (port in use, not allowed, no such
    host): bound before the URL is printed, so a URL is only ever printed for a server that is ours."""
    import errno
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # one line per request said nothing to a user
            pass

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        return make_server(host, port, None, server_class=Server, handler_class=Quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StudyError(f"port {port} on {host} is already in use (another dashboard?); "
                             f"choose another with --port") from None
        raise StudyError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def dashboard(*, study_name: str, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
              writable: bool = False) -> int:
    """Serve optuna-dashboard on the storage, with the artifact store beside it (weights files),
    read-only unless `writable`. Returns 130 when stopped by Ctrl-C or SIGTERM, after one line."""
    import signal
    url = storage_url(study_name=study_name, storage=storage)
    rdb = open_storage(url)  # fail here, in one line, if it cannot be opened or holds no studies
    art = artifact_dir(url, study_name)
    store = None
    if art.is_dir():
        from optuna.artifacts import FileSystemArtifactStore
        store = FileSystemArtifactStore(str(art))
    server = _listen(host, port)  # a busy port is one error line, before any URL is printed
    stopped_by = {}

    def stop(signum, frame):
        # SIGTERM stops it like Ctrl-C: a flag, read between requests. Raising here instead could
        # land inside wsgiref's request handling, whose bare except prints it and serves on (seen:
        # a SIGTERM right after a request left the server running)
        stopped_by.setdefault("cause", "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # PED-ANOVA warns per parameter on a small study ("Some regimes ... have less than 2 trials"),
    # Optuna marks features experimental: none of it says anything to the person reading the page
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        faster_dashboard_pages()
        from optuna_dashboard import wsgi
        app = wsgi(url, artifact_store=store)
        warm_dashboard(app, rdb, study_name)
        server.set_app(app if writable else read_only(app))
        if not stopped_by:
            print(f"optuna-dashboard for {safe_url(url)}: http://{host}:{port}/  "
                  f"({'the page may change the study' if writable else 'read-only'}; Ctrl-C to stop)", flush=True)
        server.timeout = 0.5  # handle_request returns at least this often, to see a stop
        while not stopped_by:
            server.handle_request()
    finally:
        server.server_close()
    print(f"dashboard stopped by {stopped_by['cause']}", flush=True)
    return 130


def warm_dashboard(app, storage: RDBStorage, study_name: str) -> None:
    """Fill the dashboard's caches (the study's trials, its parameter importances) before the URL is
    printed. Its server answers one request at a time and the study page asks for the importances
    first, so a cold first open waited for all trials to load and PED-ANOVA to run before the page's
    own data came (2,000 trials: 6 of the page's 17.5 s; bench --study-scale). A study not in the
    storage is left to the page to report."""
    from wsgiref.util import setup_testing_defaults
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    # after=<huge>: the study's trials and summaries are loaded and cached, none is serialised
    for path, query in ((f"/api/studies/{study_id}/param_importances", ""),
                        (f"/api/studies/{study_id}", f"after={2**31}")):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
        setup_testing_defaults(environ)
        for _ in app(environ, lambda status, headers, exc_info=None: None):
            pass
