"""The one function every state change goes through: audit entry + change event, atomically.

Chain formats. ``canonical_json`` is JSON with sorted keys, ``(",", ":")`` separators, UTF-8,
no NaN; ``fields`` is every stored column except ``hash`` (``prev_hash`` included). The first
entry's ``prev_hash`` is 64 zeros. ``key_id`` tells which scheme produced an entry's ``hash``:

- ``key_id == ""`` (audit.v1, entries written before migration 0005):
  ``hash = SHA-256(canonical_json(fields))``. Anyone can recompute it.
- ``key_id != ""`` (audit.v2, every entry written since):
  ``hash = HMAC-SHA256(key, canonical_json(fields | {"key_id": key_id}))`` with the server's
  secret ``AUDIT_HMAC_KEY`` (env or ``AUDIT_HMAC_KEY_FILE``, never stored in the database);
  ``key_id`` = the first 16 hex digits of SHA-256 over a label and the key, so a verifier can
  tell a key mismatch from tampering without the id revealing the key.

Both are 64 hex digits and ``prev_hash`` links either kind, so a v2 entry whose ``prev_hash``
is the hash of the last v1 entry seals the whole v1 prefix under the key (migration 0005
writes such an ``audit.keyed`` entry when it upgrades a non-empty chain).

``manage.py verify_audit`` recomputes the chain and compares its tip with the anchors
(``twins.audit_chain``: seq + hash copied periodically to the append-only ``AuditAnchor``
table and ``POLICY_AUDIT_ANCHOR_FILE``), which is what reveals truncation.
Timestamps are ISO 8601 with offset; ``before``/``after`` are the resource's JSON states.

Ordering: ``record_change`` (and ``record_changes``, many changes under one acquisition) takes
a transaction-scoped PostgreSQL advisory lock before it reads the chain's tip (after the row
locks the transaction needs: see ``_lock``). Everything that does not depend on the tip
(labels, JSON, row parameters) is built before the lock; under it run the tip read (in the
lock's round trip), one HMAC per entry and one prepared INSERT statement for all rows (one
round trip). The lock is held until commit, so (1)
``seq`` and ``prev_hash`` are never raced, and (2) ``ChangeEvent`` ids are drawn in commit
order, which is what makes the feed's ``id > cursor`` reads gap-free (ARCHITECTURE.md, "a single
sequencer").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from twins.feed import announce_commit
from twins.models import AuditEntry, ChangeEvent, Twin
from twins.request_context import current_request_id

AUDIT_LOCK_KEY = 0x0475_7431  # any constant unique to this lock
GENESIS_HASH = "0" * 64
SYSTEM_ACTOR = "system"
LEGACY_KEY_ID = ""  # audit.v1: unkeyed SHA-256
KEY_ID_LABEL = b"opstwin.audit.hmac-key-id\x00"

_key_cache: tuple[str, bytes, str] | None = None


def canonical_text(value: Any) -> str:
    """``value`` as canonical JSON text: sorted keys, compact, no ASCII escaping, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, cls=DjangoJSONEncoder)


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes (``canonical_text``, UTF-8)."""
    return canonical_text(value).encode()


def _as_jsonb_returns(text: str) -> float | int:
    """A JSON number as PostgreSQL's ``jsonb`` gives it back: ``numeric`` keeps no exponent
    and no negative zero, so ``1e+16`` comes back as the integer 10000000000000000 and
    ``-0.0`` as ``0.0``. Hashing the number as stored keeps the chain verifiable."""
    number = Decimal(text)
    plain = format(abs(number) if number.is_zero() else number, "f")
    return float(plain) if "." in plain else int(plain)


def jsonable(value: Any) -> Any:
    """Round-trip ``value`` through JSON so datetimes, UUIDs and decimals become plain JSON,
    with each non-integer number as ``jsonb`` stores it (``_as_jsonb_returns``)."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder), parse_float=_as_jsonb_returns)


def entry_fields(entry: AuditEntry) -> dict[str, Any]:
    """The hashed fields of ``entry`` as a plain dict (everything but ``hash`` and ``id``)."""
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "twin": entry.twin_slug,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "request_id": entry.request_id,
        "client_address": entry.client_address,
        "prev_hash": entry.prev_hash,
    }


def entry_hash(entry: AuditEntry) -> str:
    """audit.v1: SHA-256 hex digest of the canonical JSON of ``entry_fields(entry)`` (unkeyed)."""
    return hashlib.sha256(canonical_json(entry_fields(entry))).hexdigest()


def key_id_of(key: bytes) -> str:
    """Public id of an HMAC key: 16 hex digits of SHA-256(label || key); reveals nothing of it."""
    return hashlib.sha256(KEY_ID_LABEL + key).hexdigest()[:16]


def audit_key() -> tuple[bytes, str]:
    """(key bytes, key id) of ``settings.AUDIT_HMAC_KEY`` (UTF-8 of the configured string).

    Cached per key string, so ``record_change`` pays for it once per process. Raises
    ``ImproperlyConfigured`` when the setting is missing or empty (settings.py fills it outside
    production from a per-checkout file and requires it in production).
    """
    global _key_cache
    from django.core.exceptions import ImproperlyConfigured

    raw = getattr(settings, "AUDIT_HMAC_KEY", None)
    if not raw:
        raise ImproperlyConfigured("AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) is not set")
    cached = _key_cache
    if cached is None or cached[0] != raw:
        key = raw.encode()
        cached = _key_cache = (raw, key, key_id_of(key))
    return cached[1], cached[2]


def entry_mac(entry: AuditEntry, key: bytes) -> str:
    """audit.v2: HMAC-SHA256 hex of the canonical JSON of the fields plus ``entry.key_id``."""
    fields = entry_fields(entry)
    fields["key_id"] = entry.key_id
    return hmac.new(key, canonical_json(fields), hashlib.sha256).hexdigest()


def seal(entry: AuditEntry) -> None:
    """Set ``entry.key_id`` and ``entry.hash`` with the server's key (audit.v2), in place."""
    key, entry.key_id = audit_key()
    entry.hash = entry_mac(entry, key)


def actor_label(actor) -> tuple[str, str]:
    """(name, role) of an actor: a user (role = first role group) or a system component name."""
    if actor is None:
        return SYSTEM_ACTOR, "system"
    if isinstance(actor, str):
        return actor, "system"
    from twins.roles import role_of

    return actor.get_username(), role_of(actor)


TIP_SQL = f'SELECT seq, hash FROM "{AuditEntry._meta.db_table}" ORDER BY seq DESC LIMIT 1'
ROW_LOCK_SQL = (f"SELECT 1 FROM {Twin._meta.db_table} WHERE id = ANY(%s) ORDER BY id "
                "FOR KEY SHARE")
SEQUENCING_LOCK_SQL = f"SELECT pg_advisory_xact_lock({AUDIT_LOCK_KEY})"


@contextmanager
def _statements() -> Iterator[psycopg.Connection]:
    """Django's psycopg connection (``connection.connection``, in the caller's transaction)
    for the ledger's own statements, which run on server-side-binding cursors.

    Errors come out as Django's (``connection.wrap_database_errors``: ``IntegrityError``,
    ``OperationalError``...), so callers and the API's handlers see what Django's cursors
    raise. With ``settings.DB_PREPARED_STATEMENTS`` the statements are server-side prepared
    statements: psycopg's ``prepare_threshold`` is 0 for this span only (Django leaves it off,
    and its own client-bound queries are never prepared or counted), so under the sequencing
    lock PostgreSQL executes stored plans instead of parsing and planning each statement. A
    rollback makes psycopg drop them; the next call prepares them again. These statements are
    not in ``connection.queries`` or Django's query-count assertions.
    """
    connection.ensure_connection()
    raw = connection.connection
    threshold = raw.prepare_threshold
    if settings.DB_PREPARED_STATEMENTS:
        raw.prepare_threshold = 0
    try:
        with connection.wrap_database_errors:
            yield raw
    finally:
        raw.prepare_threshold = threshold


def _lock(twin_ids, *, read_tip: bool) -> tuple[int, str] | None:
    """Take the row locks a change needs, then the sequencing lock, then (``read_tip``) read
    the chain's tip: one round trip (psycopg pipeline mode), each statement prepared.

    Lock order: the sequencing lock is global and held to commit. If a transaction held it and
    then waited for a row lock (foreign-key checks take KEY SHARE locks, and Django defers
    them to COMMIT), while the row's holder waited for the sequencing lock, PostgreSQL would
    abort one of them as a deadlock. So the pending foreign-key checks run first (``SET
    CONSTRAINTS ALL IMMEDIATE``, then deferral is restored) and the twin rows the change events
    will reference (``twin_ids``) are locked FOR KEY SHARE in id order before the sequencing
    lock is requested. Each pipelined statement runs with its own snapshot under READ
    COMMITTED, so the tip is read after the lock was granted and sees every chain entry
    committed before. Returns ``(seq, hash)``, or None (empty chain, or not ``read_tip``).
    """
    with _statements() as raw, psycopg.Cursor(raw) as locks, psycopg.Cursor(raw) as tip:
        with raw.pipeline():
            locks.execute("SET CONSTRAINTS ALL IMMEDIATE")
            locks.execute("SET CONSTRAINTS ALL DEFERRED")
            if twin_ids:
                locks.execute(ROW_LOCK_SQL, [sorted(int(i) for i in twin_ids)])
            locks.execute(SEQUENCING_LOCK_SQL)
            if read_tip:
                tip.execute(TIP_SQL)
        row = tip.fetchone() if read_tip else None
    return (row[0], row[1]) if row else None


# Column order of the INSERTs: the values known only under the lock come first.
ENTRY_COLUMNS = ("seq", "at", "prev_hash", "hash", "actor", "role", "action", "resource_type",
                 "resource_id", "twin_slug", "before", "after", "reason", "request_id",
                 "client_address", "key_id")
EVENT_COLUMNS = ("created_at", "type", "resource_type", "resource_id", "operation", "twin_id",
                 "actor", "data")
ENTRY_ROW = "(" + ", ".join(["%s"] * 10 + ["%s::jsonb"] * 2 + ["%s"] * 4) + ")"
EVENT_ROW = "(" + ", ".join(["%s"] * 7 + ["%s::jsonb"]) + ")"
ROWS_PER_STATEMENT = 1000  # 24 parameters a change; PostgreSQL takes at most 65,535


@lru_cache(maxsize=64)
def _insert_sql(entries: int, events: int) -> str:
    """The INSERT of ``entries`` audit entries and ``events`` change events as one statement
    (returning the events' ids in VALUES order); one text per shape, so it is prepared once."""
    events_sql = (f'INSERT INTO "{ChangeEvent._meta.db_table}" ({", ".join(EVENT_COLUMNS)}) '
                  f"VALUES {', '.join([EVENT_ROW] * events)} RETURNING id")
    if not entries:
        return events_sql
    return (f'WITH entries AS (INSERT INTO "{AuditEntry._meta.db_table}" '
            f"({', '.join(ENTRY_COLUMNS)}) VALUES {', '.join([ENTRY_ROW] * entries)}) "
            + events_sql)


@dataclass(slots=True)
class _Prepared:
    """One change made ready before the lock is taken: everything but seq, at and prev_hash.

    ``mac_head``/``mac_mid``/``mac_tail``/``mac_end`` are the canonical JSON of the hashed
    fields (``entry_mac``'s input: keys sorted, so ``at``, ``prev_hash`` and ``seq`` fall
    between them) split around the three values the lock decides; ``entry_values`` and
    ``event_values`` are the rest of each row's parameters (``ENTRY_COLUMNS[4:]``,
    ``EVENT_COLUMNS[1:]``; JSON columns as canonical JSON text).
    """

    mac_head: str
    mac_mid: str
    mac_tail: str
    mac_end: str
    entry_values: tuple
    event_values: tuple
    event: dict


def _prepare(key_id: str, *, actor, action: str, resource_type: str, resource_id: Any,
             operation: str, after: dict | None, before: dict | None = None, twin=None,
             reason: str = "", request=None) -> _Prepared:
    """Build one change's rows and JSON before the lock (``record_change``'s arguments).

    The JSON states are encoded once, as canonical JSON, for both the HMAC and the ``jsonb``
    columns.
    """
    name, role = actor_label(actor)
    after, before = jsonable(after), jsonable(before)
    resource_id = str(resource_id)
    twin_slug = twin.slug if twin else ""
    request_id = _request_id(request)
    client_address = (request.META.get("REMOTE_ADDR", "") if request else "")[:64]
    after_json = canonical_text(after)
    before_json = canonical_text(before)
    data = after if after is not None else {"id": resource_id}
    data_json = after_json if after is not None else canonical_text(data)

    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    twin_id = int(twin.pk) if twin else None
    event_type = f"{resource_type}.{operation}"
    return _Prepared(
        mac_head=(f'{{"action":{text(action)},"actor":{text(name)},"after":{after_json},'
                  '"at":'),
        mac_mid=(f',"before":{before_json},"client_address":{text(client_address)},'
                 f'"key_id":{text(key_id)},"prev_hash":'),
        mac_tail=(f',"reason":{text(reason)},"request_id":{text(request_id)},'
                  f'"resource_id":{text(resource_id)},"resource_type":{text(resource_type)},'
                  f'"role":{text(role)},"seq":'),
        mac_end=f',"twin":{text(twin_slug)}}}',
        entry_values=(name, role, action, resource_type, resource_id, twin_slug,
                      None if before is None else before_json,
                      None if after is None else after_json,
                      reason, request_id, client_address, key_id),
        event_values=(event_type, resource_type, resource_id, operation, twin_id, name,
                      data_json),
        event={"type": event_type, "resource_type": resource_type, "resource_id": resource_id,
               "operation": operation, "twin_id": twin_id, "actor": name, "data": data},
    )


def _chain(prepared: list[_Prepared], tip: tuple[int, str] | None, key: bytes,
           at) -> list[list]:
    """Seal ``prepared`` in order after ``tip`` (under the lock): each entry's row parameters.

    Only string joins and one HMAC per entry happen here; the result is byte-identical to
    ``entry_mac`` over the stored entry (``twins.audit_chain`` recomputes it that way).
    """
    seq, prev = tip if tip else (0, GENESIS_HASH)
    at_json = f'"{at.isoformat()}"'
    rows = []
    for item in prepared:
        seq += 1
        message = (f"{item.mac_head}{at_json}{item.mac_mid}\"{prev}\"{item.mac_tail}{seq}"
                   f"{item.mac_end}")
        digest = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
        rows.append([seq, at, prev, digest, *item.entry_values])
        prev = digest
    return rows


def _insert(entry_rows: list[list], event_rows: list[list]) -> list[int]:
    """Append the audit entries and the change events (as many as there are rows of either),
    one prepared statement per ``ROWS_PER_STATEMENT``; the events' ids, in list order."""
    ids: list[int] = []
    with _statements() as raw, psycopg.Cursor(raw) as cursor:
        for start in range(0, max(len(entry_rows), len(event_rows)), ROWS_PER_STATEMENT):
            entries = entry_rows[start:start + ROWS_PER_STATEMENT]
            events = event_rows[start:start + ROWS_PER_STATEMENT]
            cursor.execute(_insert_sql(len(entries), len(events)),
                           [v for row in entries for v in row]
                           + [v for row in events for v in row])
            ids += [row[0] for row in cursor.fetchall()]
    return ids


def _request_id(request) -> str:
    """The id the request was served under (``opstwin_site.request_log`` assigns it), else the
    current request's or task's (``twins.request_context``), else ``""``; at most 64 chars."""
    assigned = getattr(request, "request_id", None) if request is not None else None
    return (assigned or current_request_id())[:64]


def _append(changes: list[dict]) -> list[ChangeEvent]:
    """Prepare ``changes``, then under one lock acquisition chain and INSERT them all."""
    key, key_id = audit_key()
    prepared = [_prepare(key_id, **change) for change in changes]
    tip = _lock({item.event["twin_id"] for item in prepared} - {None}, read_tip=True)
    at = timezone.now()
    ids = _insert(_chain(prepared, tip, key, at),
                  [[at, *item.event_values] for item in prepared])
    transaction.on_commit(partial(announce_commit, ids[-1]))
    names = [f.attname for f in ChangeEvent._meta.concrete_fields]  # from_db's value order
    return [ChangeEvent.from_db(connection.alias, names,
                                [{"id": event_id, "created_at": at, **item.event}[n]
                                 for n in names])
            for event_id, item in zip(ids, prepared, strict=True)]


def record_change(
    *,
    actor,
    action: str,
    resource_type: str,
    resource_id: Any,
    operation: str,
    after: dict | None,
    before: dict | None = None,
    twin=None,
    reason: str = "",
    request=None,
) -> ChangeEvent:
    """Append an AuditEntry and a ChangeEvent for one state change, in the caller's transaction.

    ``actor`` is a user, a system component name (``"detector"``) or None. ``after``/``before``
    are the resource's JSON states (``{resource_type}.v1``). ``request`` (optional) supplies the
    client address; the request id is the one the request or the Celery task that a request
    queued runs under (``twins.request_context``), so an entry written by a task names the
    request that started it. Raises ``TransactionManagementError`` if called outside
    ``transaction.atomic()``: a change and its record must commit together or not at all.

    Everything but the chain link is built before the sequencing lock is taken; under it run
    one round trip for the tip, one HMAC, and one INSERT statement for both rows.
    """
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("record_change needs transaction.atomic()")
    return _append([{
        "actor": actor, "action": action, "resource_type": resource_type,
        "resource_id": resource_id, "operation": operation, "after": after, "before": before,
        "twin": twin, "reason": reason, "request": request}])[0]


def record_changes(changes: list[dict]) -> list[ChangeEvent]:
    """Append many state changes under one acquisition of the sequencing lock, in list order.

    Each item holds ``record_change``'s keyword arguments (``actor``, ``action``,
    ``resource_type``, ``resource_id``, ``operation``, ``after``, and optionally ``before``,
    ``twin``, ``reason``, ``request``). The audit entries get consecutive ``seq`` numbers and
    are chained in list order; the change events get ids in the same order, all in one INSERT
    statement; their ``at``/``created_at`` is one timestamp. Commits announce once (the last
    id). Same contract as ``record_change``: raises ``TransactionManagementError`` outside
    ``transaction.atomic()``, ``TypeError`` for an item with a missing or unknown key.
    Returns the ``ChangeEvent`` of each change, in order; ``[]`` (no lock, no query) for an
    empty list.
    """
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("record_changes needs transaction.atomic()")
    if not changes:
        return []
    return _append(changes)


def append_events(events: list[dict]) -> list[int]:
    """Append change events that carry no audit entry (coalesced asset state), in order.

    Each item is ``{"type", "resource_type", "resource_id", "operation", "twin", "actor",
    "data"}`` (``twin`` a ``Twin`` or None). Used for derived state that changes with every
    reading (``asset.state``): it belongs on the feed, so agents see the plant move, but not
    in the audit chain, which records decisions and edits. The ids are drawn under the same
    sequencing lock as ``record_change``'s, so the feed stays gap-free in commit order.
    Returns the new ids; raises ``TransactionManagementError`` outside ``transaction.atomic()``.
    """
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("append_events needs transaction.atomic()")
    if not events:
        return []
    rows = [[e["type"], e["resource_type"], str(e["resource_id"]), e["operation"],
             e["twin"].pk if e["twin"] is not None else None, e["actor"],
             canonical_text(jsonable(e["data"]))] for e in events]
    _lock({row[4] for row in rows} - {None}, read_tip=False)
    now = timezone.now()
    ids = _insert([], [[now, *row] for row in rows])
    transaction.on_commit(partial(announce_commit, ids[-1]))
    return ids
