"""The embedded PostgreSQL used when no ``DATABASE_URL`` is configured.

OpsTwin has one database engine (PostgreSQL) on every path; the demo on a bare machine gets a
private PostgreSQL server from the ``pgserver`` pip package, with its data folder under
``OPSTWIN_DATA_DIR`` (default ``.opstwin/`` in the project root). Every process pointing at the
same folder shares one server: the first one starts it, the others join it.

Lifetime: the server lives as long as the process that started it wants it. A long-lived owner
(``manage.py demo``, a pytest session) calls ``stop_embedded_database()`` when it ends (the demo
from ``atexit`` and its SIGTERM handler, pytest from ``pytest_unconfigure``); that stops the
server only if this process started it, so the demo's own children (web server, ingest
subscriber, workers), which joined the server, never stop it. Stopping is a "fast" shutdown:
a process that joined the server and is still connected loses its connections. Other commands
(``migrate``, ``shell``, ``runserver``) never stop it: run one alone and the server keeps running
for the next one, until ``stop_embedded_database()`` or
``pg_ctl -D <OPSTWIN_DATA_DIR>/pgdata stop``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
# pgserver logs every handle it opens and closes at INFO; only its warnings and errors matter.
logging.getLogger("pgserver").setLevel(logging.WARNING)

# The server handle of this process and whether this process started the server.
_server = None
_started_here = False


def _running_postmaster_pid(pgdata: Path) -> int | None:
    """PID of a live postmaster serving ``pgdata`` (first line of PostgreSQL's postmaster.pid)."""
    import psutil  # a pgserver dependency

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        return pid if psutil.Process(pid).name() == "postgres" else None
    except (OSError, ValueError, psutil.Error):
        return None


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pgdata`` and return its URL.

    The URL uses a Unix socket in the data folder (no TCP port is opened). Remembers whether
    this call started the server (see ``started_here``). Raises ``RuntimeError`` from pgserver
    if the server cannot start (e.g. a read-only folder).
    """
    global _server, _started_here
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, cron) and falls back to
        # /tmp/runtime-<uid> for pgserver's lock file, which is all pgserver needs.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # imported lazily: only the embedded default needs it

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    before = _running_postmaster_pid(pgdata)
    # cleanup_mode=None: pgserver's own exit hook never stops the server (its reference count
    # of processes is stale after a kill -9); the process that started it stops it instead.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    if _server is None:
        _server, _started_here = server, server.get_pid() != before
    return server.get_uri()


def started_here() -> bool:
    """Whether this process started the embedded server (rather than joining a running one)."""
    return _started_here


def stop_embedded_database() -> bool:
    """Stop the embedded PostgreSQL if this process started it; return True if it stopped it.

    Closes this process's Django connections first, then runs ``pg_ctl stop`` (fast mode: open
    sessions of other processes are ended). Safe to call several times, from ``atexit`` or a
    signal handler; a no-op in processes that joined the server or use ``DATABASE_URL``.
    Raises nothing: a failure to stop is logged.
    """
    global _started_here
    if _server is None or not _started_here:
        return False
    _started_here = False
    import pgserver

    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # best effort: the server stops anyway
        log.debug("closing Django connections before stopping PostgreSQL failed", exc_info=True)
    try:
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_server.pgdata,
                        user=_server.system_user)
    except Exception as exc:  # reported, never raised at exit
        log.warning("could not stop the embedded PostgreSQL in %s: %s", _server.pgdata, exc)
        return False
    return True
