"""Where a study lives and how it is opened: study names, storage URLs, read-only opening with clean
errors, heartbeats, the creation lock and the claim-safe RDB storage."""
from __future__ import annotations

import contextlib
import os
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
    storage.db.StudyError: --study-name must be a plain name, not a path or a special name: got '../../x' (letters, digits and - _ . are safe)
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


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, however it is spelt (sqlite:///x.db, sqlite+pysqlite:///x.db, ...);
    None for a server URL or an in-memory SQLite one. Every SQLite spelling must come here: a file
    URL treated as a server's would reach SQLAlchemy, which creates the file on connecting."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    try:
        from sqlalchemy.engine import make_url
        parsed = make_url(url)
    except Exception:
        return None  # not a URL SQLAlchemy reads: refused where it is opened
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database)
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
    path = sqlite_path(url)
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
        raise _cannot_open(url, e) from None


def _cannot_open(url: str, e: BaseException) -> StudyError:
    """The one line for a storage URL that SQLAlchemy or its driver cannot open."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StudyError(f"cannot open storage {safe_url(url)}: {msg}")


_held: dict = {}  # lock key -> depth of this process's hold on it (re-entrant)
_held_guard = threading.RLock()


@contextlib.contextmanager
def _reentrant(key, take):
    """Hold the lock `take()` takes (a context manager), once per process for `key`: a nested use
    waits for nothing (a second flock or server session of the same process would wait for the
    first forever); threads of one process (the heartbeat thread, say) take turns."""
    with _held_guard:
        if _held.get(key):
            _held[key] += 1
            try:
                yield
            finally:
                _held[key] -= 1
            return
        with take():
            _held[key] = 1
            try:
                yield
            finally:
                _held.pop(key, None)


@contextlib.contextmanager
def _flock(folder: Path):
    import fcntl
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _folder_lock(path: Path):
    """An exclusive flock on the folder holding a SQLite file, re-entrant within a process."""
    folder = (path.parent if str(path.parent) else Path(".")).resolve()
    return _reentrant(("folder", folder), lambda: _flock(folder))


# PostgreSQL advisory lock key for creation_lock (any fixed 64-bit number; zlib.crc32(b"mnist-nas creation"))
CREATION_LOCK_KEY = 1_212_830_716


CREATION_LOCK_LIMIT = 600  # seconds a process waits for another's creation lock before it gives up


@contextlib.contextmanager
def _advisory_lock(url: str, limit: float = CREATION_LOCK_LIMIT):
    """A session-level PostgreSQL advisory lock, held on a connection of its own. The connection
    runs in autocommit (no transaction left open for a server's idle-in-transaction timeout to
    end); closing it releases the lock too, so an unlock that fails because the server went away
    is not an error of its own. Taken with pg_try_advisory_lock, polled: a process that holds it
    and hangs makes the others say so and give up after `limit` seconds, in one line."""
    import time

    import sqlalchemy as sa
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
        conn = engine.connect()
    except Exception as e:  # SQLAlchemy or driver errors: a URL we cannot open
        raise _cannot_open(url, e) from None
    try:
        with conn:
            waited, told = time.monotonic(), False
            while True:
                try:
                    got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": CREATION_LOCK_KEY}).scalar()
                except sa.exc.DBAPIError as e:
                    raise _cannot_open(url, e) from None
                if got:
                    break
                if time.monotonic() - waited > limit:
                    raise StudyError(f"another process has held the study creation lock of {safe_url(url)} for "
                                     f"over {limit:g} s; is a search or worker stuck while creating or resuming one?")
                if not told and time.monotonic() - waited > 5:
                    print("waiting for another process that is creating or resuming a study in this database",
                          flush=True)
                    told = True
                time.sleep(0.2)
            try:
                yield
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):  # the server gone: the lock went with the session
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": CREATION_LOCK_KEY})
    finally:
        engine.dispose()


def _server_lock(url: str):
    """creation_lock on a PostgreSQL server, re-entrant within a process. The lock is the
    database's, so the re-entrancy key is too (host, port, database: not the URL's spelling, whose
    driver or user may differ)."""
    from sqlalchemy.engine import make_url
    u = make_url(url)
    return _reentrant(("server", u.host, u.port, u.database), lambda: _advisory_lock(url))


@contextlib.contextmanager
def creation_lock(url: str):
    """Serialise what a process does when it creates or resumes a study (the schema, model6 and
    the start points, the stopped trials' retries): each reads the study, then writes what is
    missing, and two processes at one instant would both write it. SQLite: two `search`es started
    together on a new file raced to create the schema (the loser failed with exit 2); the lock is
    an flock on the database's folder, so no extra file is left behind. PostgreSQL: an advisory
    lock on the database (4 workers resuming at one instant had enqueued 4 retries of one stopped
    trial: tests/test_scale.py). Other servers: no lock."""
    path = sqlite_path(url)
    if path is not None:
        with _folder_lock(path):
            yield
    elif url.startswith("postgresql"):
        with _server_lock(url):
            yield
    else:
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
        path = sqlite_path(self.url)
        if path is None:
            return super().set_trial_state_values(trial_id, state, values)
        with _folder_lock(path):
            return super().set_trial_state_values(trial_id, state, values)


def _optuna_tables() -> set[str]:
    """The tables an Optuna storage holds: its models', and alembic's version table (without it
    RDBStorage writes one, so a read-only command would change the file)."""
    from optuna.storages._rdb import models
    return set(models.BaseModel.metadata.tables) | {"alembic_version"}


# Rows Optuna's RDBStorage writes on opening when they are missing (its version row, alembic's
# revision): a read-only command refuses a database without them rather than let Optuna add them.
_STAMPS = ("version_info", "alembic_version")


def _require_optuna_tables(url: str, path: Path | None) -> None:
    """Refuse, without writing a byte, a database that does not already hold Optuna's schema and the
    version rows it stamps on opening."""
    count = lambda table: f"select count(*) from {table}"  # table: one of _STAMPS, never user text
    if path is not None:
        import sqlite3
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise StudyError(f"{path} holds no Optuna studies (not a SQLite database)")
        try:  # read-only and immutable-free: mode=ro cannot create or change the file
            con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
                stamped = {t for t in _STAMPS if t in tables and con.execute(count(t)).fetchone()[0]}
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
                with engine.connect() as con:
                    stamped = {t for t in _STAMPS if t in tables and con.execute(sqlalchemy.text(count(t))).scalar()}
            finally:
                engine.dispose()
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudyError(f"cannot open storage {safe_url(url)}: {msg}") from None
    where = path if path is not None else safe_url(url)
    missing = _optuna_tables() - tables
    if missing:
        raise StudyError(f"{where} holds no Optuna studies (missing tables: {', '.join(sorted(missing)[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}); read-only commands never create them")
    unstamped = set(_STAMPS) - stamped
    if unstamped:
        raise StudyError(f"{where} is not a complete Optuna storage (no row in {', '.join(sorted(unstamped))}); "
                         f"read-only commands never write one")


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


def stored_settings(*, study_name: str, storage: str | None = None):
    """An existing study's settings (storage.records.StudySettings: its user attributes where
    mnist-nas keeps them), read without writing; None when the storage or the study does not exist
    yet (a search will create them)."""
    url = storage_url(study_name=study_name, storage=storage)
    try:
        rdb = open_storage(url)
    except StudyError:  # no file yet, or one without Optuna's tables: nothing stored to keep
        return None
    try:
        attrs = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study_name))
    except KeyError:
        return None
    from storage.records import StudySettings  # records imports this module
    return StudySettings.of(attrs)


def studies_in(folder: str | Path) -> list[optuna.Study]:
    """Every study in the SQLite files (*.db) of a folder, file by file (names sorted), each file's
    studies in the order they were made: what the experiments read from results/. Loading a study
    writes nothing."""
    out = []
    for db in sorted(Path(folder).glob("*.db")):
        url = f"sqlite:///{db}"
        rdb = open_storage(url)
        out += [optuna.load_study(study_name=s.study_name, storage=rdb) for s in rdb.get_all_studies()]
    return out
