"""Reads of the telemetry query API from a PostgreSQL read replica, when one is configured.

``DATABASE_REPLICA_URL`` adds the database alias ``replica`` (a streaming replica of the
primary). Inside ``from_replica()`` (the query API's GET views: ``/telemetry/query``,
``/telemetry/aggregate``, ``/telemetry/latest``) the samples and rollups are read there:
raw SQL through ``query_connection()``, ORM reads of telemetry models through
``TelemetryReplicaRouter``. Everything else (scoping twins and assets, every write, detection,
simulation, policy) stays on the primary, which always has the latest state. A replica lags
the primary by its replay delay, so the API may miss the last moments of telemetry there;
without ``DATABASE_REPLICA_URL`` everything reads the primary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA_ALIAS = "replica"
_reading = ContextVar("telemetry_reads_from_replica", default=False)


def replica_configured() -> bool:
    """True when the ``replica`` database alias exists (``DATABASE_REPLICA_URL`` is set)."""
    return REPLICA_ALIAS in connections.settings


@contextmanager
def from_replica() -> Iterator[None]:
    """Telemetry reads inside this block go to the replica, if one is configured."""
    token = _reading.set(True)
    try:
        yield
    finally:
        _reading.reset(token)


def query_alias() -> str:
    """The database alias telemetry reads use here: ``replica`` or ``default``."""
    return REPLICA_ALIAS if _reading.get() and replica_configured() else DEFAULT_DB_ALIAS


def query_connection():
    """The Django connection of ``query_alias()`` (for raw SQL reads)."""
    return connections[query_alias()]


class TelemetryReplicaRouter:
    """Django database router: ORM reads of the telemetry app's models inside
    ``from_replica()`` go to the replica; no opinion on anything else (the primary)."""

    def db_for_read(self, model, **hints) -> str | None:
        if model._meta.app_label == "telemetry" and query_alias() == REPLICA_ALIAS:
            return REPLICA_ALIAS
        return None

    def db_for_write(self, model, **hints) -> str | None:
        return None

    def allow_relation(self, obj1, obj2, **hints) -> bool | None:
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool | None:
        return None
