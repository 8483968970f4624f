"""The embedded PostgreSQL used when no ``DATABASE_URL`` is configured.

OpsTwin has one database engine (PostgreSQL) on every path; the demo on a bare machine gets a
private PostgreSQL server from the ``pgserver`` pip package, with its data folder under
``OPSTWIN_DATA_DIR`` (default ``.opstwin/`` in the project root). The server keeps running
between commands of one machine and is shared by every process pointing at the same folder.
"""

from __future__ import annotations

from pathlib import Path


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pgdata`` and return its URL.

    The URL uses a Unix socket in the data folder (no TCP port is opened). Raises
    ``RuntimeError`` from pgserver if the server cannot start (e.g. a read-only folder).
    """
    import pgserver  # imported lazily: only the embedded default needs it

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None keeps the server up for the other processes of the demo (web, workers).
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()
