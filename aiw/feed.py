"""Appending to and reading from the change feed (the transactional outbox).

Readers get :class:`FeedItem` objects: the change-event.v1 payload of one event, encoded to
JSON once, plus the fields the filters need. ``/diff``, the SSE and WebSocket streams and the
in-process hub all read through :func:`read_events`, so every channel serves the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import psycopg
from django.db import connection
from psycopg.rows import dict_row

from aiw.models import FeedRetention
from twins.env import database_url_of
from twins.feed import InvalidCursor, encode_cursor, newest_event_id, parse_cursor
from twins.feed_scope import FeedFilter, Scope
from twins.models import ChangeEvent

__all__ = ["InvalidCursor", "encode_cursor", "newest_event_id", "parse_cursor"]

log = logging.getLogger(__name__)
#: The PostgreSQL notification channel of committed feed events (payload: the newest id).
FEED_CHANNEL = "aiw_feed"
EVENT_FIELDS = ("id", "type", "resource_type", "resource_id", "operation", "twin_id",
                "twin__slug", "actor", "created_at")






def feed_bounds() -> tuple[int, int]:
    """(newest event id, pruned-through id) in one query; 0 for none."""
    events, retention = ChangeEvent._meta.db_table, FeedRetention._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT (SELECT max(id) FROM "{events}"), '  # noqa: S608 - model tables
                       f'(SELECT max(pruned_through) FROM "{retention}")')
        newest, pruned = cursor.fetchone()
    return newest or 0, pruned or 0


def decode_cursor(cursor: str, bounds: tuple[int, int] | None = None) -> int:
    """Inverse of ``encode_cursor``, checked against the feed: the id to read after.

    ``bounds`` is ``feed_bounds()`` if the caller already read it. Raises ``InvalidCursor``
    (reason ``unknown``) for a malformed cursor or one beyond the newest event (a reset
    database), and (reason ``expired``) for one older than retention.
    """
    event_id = parse_cursor(cursor)
    newest, pruned = bounds or feed_bounds()
    if event_id > newest:
        raise InvalidCursor("cursor points past the newest event (was the database reset?)")
    if event_id < pruned:
        raise InvalidCursor("cursor has expired: the events after it were pruned", "expired")
    return event_id


class FeedNotifier:
    """Announces committed event ids to live-stream hubs from one background thread.

    A commit only records the highest id it made visible (``announce``: a lock and a max, a
    few microseconds) and wakes the thread, which sends the newest id it has seen, so a burst
    of commits costs one notification, and its round trip is off the writer's path (the
    synchronous channel-layer send it replaced was 2.8 of the 5.7 ms an audited change cost,
    issue 16). After a send the thread waits ``min_interval`` seconds (default 5 ms) before
    the next, so a process that commits thousands of changes a second sends at most a few
    hundred notifications, each with the newest id; and it keeps what ``send`` uses (its
    database connection) while commits keep coming, calling ``release`` only once ``idle``
    seconds passed without one, so a busy writer does not pay a connection checkout per
    notification.
    One pending value, one thread per process (re-created after a fork, e.g. in a Celery
    child): nothing here grows with the number of writers or subscribers. A notification lost
    to a crash only delays delivery until the hubs' next poll: the hubs read events from the
    database, never from the message.
    """

    def __init__(self, send, release=None, *, min_interval: float = 0.005,
                 idle: float = 1.0) -> None:
        self._send = send
        self._release = release
        self._min_interval = min_interval
        self._idle = idle
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def announce(self, event_id: int) -> None:
        """Record that events up to ``event_id`` are committed (called on commit)."""
        with self._lock:
            self._pending = max(self._pending, event_id)
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="aiw-feed-notifier",
                                                 daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        holding = False
        while True:
            if not self._wake.wait(self._idle if holding else None):
                holding = False  # idle: hand back what ``send`` holds
                if self._release is not None:
                    self._release()
                continue
            self._wake.clear()
            with self._lock:
                event_id, self._pending = self._pending, 0
            if event_id:
                self._send(event_id)
                holding = True
                time.sleep(self._min_interval)


def notify_subscribers(event_id: int) -> bool:
    """Tell live-stream hubs that events up to ``event_id`` are committed: ``NOTIFY`` on
    :data:`FEED_CHANNEL` with the id as payload, on this thread's database connection.

    PostgreSQL queues a notification for every listening session (it does not drop one for a
    busy listener, unlike a channel layer over capacity) and delivers it after the commit that
    sent it. The message carries only the id: hubs read the events from the database, so a
    notification lost to a crash between commit and notify delays delivery until the hubs'
    next poll but never loses an event. Returns whether the notification was sent. Never
    raises: a notification must not fail the change that committed.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [FEED_CHANNEL, str(event_id)])
    except Exception:  # e.g. the database is away; the hubs' poll delivers meanwhile
        log.exception("could not notify feed subscribers of event %s", event_id)
        return False
    return True


def _notify_from_thread(event_id: int) -> None:
    """The notifier thread's send: ``notify_subscribers``, and a failed connection is closed
    so the next notification opens a new one."""
    if not notify_subscribers(event_id):
        connection.close()


def _release_connection() -> None:
    """Close the notifier thread's database connection (back to the pool, when there is one)
    once it is idle, so the thread holds none between bursts of commits."""
    connection.close()


async def connect_async() -> psycopg.AsyncConnection:
    """A new autocommit async psycopg connection to the project's database (the caller
    closes it)."""
    conninfo = database_url_of(connection.settings_dict)
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


async def listen_for_commits() -> AsyncIterator[int | None]:
    """Yield the id in each feed notification, as it arrives (``LISTEN`` on its own
    autocommit connection to the project's database); first ``None`` once listening, so the
    caller reads whatever was committed before. Raises psycopg's errors when the connection
    fails; the caller retries.
    """
    async with await connect_async() as conn:
        await conn.execute(f"LISTEN {FEED_CHANNEL}")
        yield None
        async for note in conn.notifies():
            yield int(note.payload) if note.payload.isdigit() else None


#: The process's notifier; it hears every commit through ``twins.feed.change_committed``.
notifier = FeedNotifier(_notify_from_thread, _release_connection)


def announce_committed(sender, event_id: int, **_kwargs) -> None:
    """``change_committed`` receiver (connected in ``AiwConfig.ready``): wake the notifier."""
    notifier.announce(event_id)


def iso_utc(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, as DRF's DateTimeField renders it."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def envelope(row: dict) -> dict:
    """change-event.v1 without ``data``, from a ``values(*EVENT_FIELDS)`` row."""
    return {
        "cursor": encode_cursor(row["id"]), "id": row["id"], "type": row["type"],
        "resource_type": row["resource_type"], "resource_id": row["resource_id"],
        "operation": row["operation"], "twin": row["twin__slug"], "actor": row["actor"],
        "at": iso_utc(row["created_at"]),
    }


@dataclass(frozen=True)
class FeedItem:
    """One event as every channel sends it: change-event.v1 as JSON text, built once, and
    the fields the scope and filters need.

    ``data_json`` is the new state encoded once; every channel splices the same text.
    """

    id: int
    type: str
    resource_type: str
    twin_id: int | None
    twin: str | None
    actor: str
    head: dict
    data_json: str

    @cached_property
    def json(self) -> str:
        """The change-event.v1 object as JSON text (one WebSocket frame, one /diff entry)."""
        head = json.dumps(self.head, separators=(",", ":"), ensure_ascii=False)
        return f'{head[:-1]},"data":{self.data_json}}}'

    @cached_property
    def payload(self) -> dict:
        """The change-event.v1 object as a dict."""
        return json.loads(self.json)

    @cached_property
    def sse(self) -> bytes:
        """The event as one SSE frame: ``id:`` cursor, ``event:`` type, ``data:`` JSON."""
        return f"id: {self.head['cursor']}\nevent: {self.type}\ndata: {self.json}\n\n".encode()

    @classmethod
    def from_row(cls, row: dict) -> FeedItem:
        """Build from a ``values(*EVENT_FIELDS, "data")`` row."""
        return cls(id=row["id"], type=row["type"], resource_type=row["resource_type"],
                   twin_id=row["twin_id"], twin=row["twin__slug"], actor=row["actor"],
                   head=envelope(row),
                   data_json=json.dumps(row["data"], separators=(",", ":"),
                                        ensure_ascii=False))


def read_events(
    after_id: int, *, limit: int, scope: Scope | None = None, where: FeedFilter | None = None,
    until_id: int | None = None,
) -> list[FeedItem]:
    """Up to ``limit`` events with ``after_id < id (<= until_id)`` in feed order.

    ``scope`` (None: everything) limits them to the twins a caller may see; ``where`` applies
    the caller's type and twin filters. Runs one indexed query.
    """
    queryset = ChangeEvent.objects.filter(id__gt=after_id)
    if until_id is not None:
        queryset = queryset.filter(id__lte=until_id)
    if scope is not None:
        queryset = queryset.filter(scope.q())
    if where is not None:
        queryset = queryset.filter(where.q())
    rows = queryset.order_by("id").values(*EVENT_FIELDS, "data")[:limit]
    return [FeedItem.from_row(row) for row in rows]


async def read_events_async(conn: psycopg.AsyncConnection, after_id: int, *,
                            limit: int) -> list[FeedItem]:
    """``read_events(after_id, limit=limit)`` (no scope, no filter: the hub's read) on an
    async psycopg connection, so the hub reads on its event loop instead of handing each
    read to a thread (which, with a busy loop, waits for the GIL at every step of a query).
    Same rows, same order, same :class:`FeedItem` bytes as the ORM path."""
    events = ChangeEvent._meta.db_table
    twins = ChangeEvent._meta.get_field("twin").related_model._meta.db_table
    sql = (f'SELECT e.id, e.type, e.resource_type, e.resource_id, e.operation, e.twin_id, '  # noqa: S608 - model tables
           f't.slug AS twin__slug, e.actor, e.created_at, e.data FROM "{events}" e '
           f'LEFT OUTER JOIN "{twins}" t ON t.id = e.twin_id WHERE e.id > %s '
           f"ORDER BY e.id LIMIT %s")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql, [after_id, limit])
        return [FeedItem.from_row(row) async for row in cursor]
