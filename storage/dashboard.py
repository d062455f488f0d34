"""Serving a study's storage with optuna-dashboard: read-only unless asked, its study page made
linear in its trials, its caches warmed before the URL is printed, stopped cleanly by a signal."""
from __future__ import annotations

import warnings

import optuna
from optuna.storages import RDBStorage

from storage.artifacts import artifact_dir
from storage.db import StudyError, open_storage, safe_url, storage_url


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
