"""The only code that writes telemetry: ``ingest_batch`` (MQTT subscriber, HTTP, demo replay).

Hot path, per batch: decode and validate in Python (``telemetry.validation``: a fast path for
well-formed events), one asset lookup, then four statements in one transaction: COPY the
envelopes into a session temp table and ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the new
ids (de-duplication), binary COPY of the new events' samples, one row per asset into the
rollups' dirty ranges (plain PostgreSQL), and the newest reading per asset and metric into the
assets' reported state (``twins.state.record_reported``). Dead letters go in the same
transaction.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import NamedTuple

import msgspec
from django.db import connection, transaction
from django.utils import timezone

from telemetry import handoff
from telemetry.models import DeadLetter
from telemetry.storage import mark_dirty
from telemetry.validation import InvalidEvent, TelemetryEventIn, parse_payload
from twins.models import Asset, AssetType, Twin, declared_metrics
from twins.state import record_reported

log = logging.getLogger(__name__)
DEAD_LETTER_MAX_CHARS = 1_000_000


class RawPayload(NamedTuple):
    """One received payload: raw bytes/str (or an already-decoded document) and its topic.

    A named tuple (immutable): the subscriber builds one per message.
    """

    body: bytes | str | dict
    topic: str = ""


@dataclass
class IngestReport:
    """What ``ingest_batch`` did with each payload (indices refer to the input list)."""

    accepted: int = 0
    duplicates: int = 0
    samples: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    asset_ids: set[int] = field(default_factory=set)
    #: ``ts`` of each accepted (new) event, for freshness-lag statistics.
    accepted_ts: list = field(default_factory=list)


def _topic_matches(topic: str, event: TelemetryEventIn) -> bool:
    if not topic:
        return True
    parts = topic.split("/")
    return len(parts) == 4 and parts[1:] == [event.twin_id, event.asset_id, "telemetry"]


@dataclass(frozen=True, slots=True)
class _Target:
    """What ingest checks an event against: its asset's id, ``twin/asset`` name, declared
    metric names, valid ranges (``{metric: (min, max)}``, a missing bound unbounded) and
    declarations (for the units in messages)."""

    id: int
    name: str
    names: frozenset[str]
    bounds: dict[str, tuple[float, float]]
    declared: list[dict]

    @classmethod
    def of(cls, asset_id: int, name: str, declared: list[dict]) -> _Target:
        bounds = {m["name"]: (m.get("min", -math.inf), m.get("max", math.inf))
                  for m in declared if "min" in m or "max" in m}
        return cls(asset_id, name, frozenset(m["name"] for m in declared), bounds, declared)

    def unit_of(self, metric: str) -> str:
        return next((m.get("unit", "") for m in self.declared if m["name"] == metric), "")


# One plain statement instead of the ORM (which cost ~2.5 ms of CPU per batch, more than
# validating a hundred events): read fresh for every batch, as before.
_ASSETS = f"""
SELECT a.id, t.slug, a.slug, a.metrics, ty.metrics
FROM {Asset._meta.db_table} a
JOIN {Twin._meta.db_table} t ON t.id = a.twin_id
LEFT JOIN {AssetType._meta.db_table} ty ON ty.id = a.asset_type_id
WHERE t.slug = ANY(%s) AND a.slug = ANY(%s)
"""


def _assets_for(events: list[TelemetryEventIn]) -> dict[tuple[str, str], _Target]:
    """``{(twin slug, asset slug): _Target}`` for the assets ``events`` name that exist."""
    pairs = {(e.twin_id, e.asset_id) for e in events}
    if not pairs:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_ASSETS, [sorted({t for t, _ in pairs}), sorted({a for _, a in pairs})])
        rows = cursor.fetchall()
    # Django has psycopg hand jsonb over as text (JSONField decodes it): decode it the same way.
    return {(twin, slug): _Target.of(asset_id, f"{twin}/{slug}", declared_metrics(
                json.loads(own), typed and json.loads(typed)))
            for asset_id, twin, slug, own, typed in rows if (twin, slug) in pairs}


def _check(
    event: TelemetryEventIn, topic: str, assets: dict, twins: set[str] | None
) -> _Target:
    """The event's asset, or ``InvalidEvent``: a topic that names another asset, an unknown
    asset (or one outside ``twins``), an undeclared metric, or a value outside the valid range
    its metric declares (``min``/``max`` of the asset's or its type's metric list)."""
    if not _topic_matches(topic, event):
        raise InvalidEvent(f"topic {topic!r} does not match twin_id/asset_id of the event")
    asset = assets.get((event.twin_id, event.asset_id))
    if asset is None or (twins is not None and event.twin_id not in twins):
        raise InvalidEvent(f"unknown asset {event.twin_id}/{event.asset_id}")
    names = asset.names
    if names and not names.issuperset(event.metrics):
        unknown = sorted(set(event.metrics) - names)
        raise InvalidEvent(f"metrics not declared on asset {asset.name}: {', '.join(unknown)}")
    for metric, (low, high) in asset.bounds.items():
        value = event.metrics.get(metric)
        if value is not None and not low <= value <= high:
            raise InvalidEvent(f"{metric}={value:g} is outside its valid range [{low:g}, "
                               f"{high:g}] {asset.unit_of(metric)} on asset {asset.name}".rstrip())
    return asset


def _validate(payloads: list[RawPayload], report: IngestReport, twins: set[str] | None):
    parsed: list[tuple[int, TelemetryEventIn, str]] = []
    for index, payload in enumerate(payloads):
        try:
            parsed.append((index, parse_payload(payload.body), payload.topic))
        except InvalidEvent as exc:
            report.rejected.append((index, str(exc)))
    assets = _assets_for([e for _, e, _ in parsed])
    valid: list[tuple[TelemetryEventIn, _Target]] = []
    seen: set = set()
    for index, event, topic in parsed:
        if event.event_id in seen:  # repeated inside this batch: a duplicate, not an error
            report.duplicates += 1
            continue
        try:
            valid.append((event, _check(event, topic, assets, twins)))
            seen.add(event.event_id)
        except InvalidEvent as exc:
            report.rejected.append((index, str(exc)))
    return valid


def _payload_text(body: bytes | str | dict) -> str:
    if isinstance(body, dict):
        text = json.dumps(body, default=str)
    elif isinstance(body, bytes):
        text = body.decode("utf-8", errors="backslashreplace")
    else:
        text = body
    # PostgreSQL text cannot hold U+0000: keep the payload, spell the character out.
    return text.replace("\x00", "\\x00")


_STAGE = "telemetry_event_stage"
_STAGE_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    n int, event_id uuid, asset_id bigint, ts timestamptz, quality text, tags jsonb,
    source text, received_at timestamptz
) ON COMMIT DELETE ROWS;
DELETE FROM {_STAGE}
"""
_INSERT_STAGED = f"""
WITH inserted AS (
    INSERT INTO telemetry_telemetryevent
        (event_id, asset_id, ts, quality, tags, source, received_at)
    SELECT event_id, asset_id, ts, quality, tags, source, received_at FROM {_STAGE}
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT s.n FROM {_STAGE} s WHERE NOT EXISTS (SELECT FROM inserted i WHERE i.event_id = s.event_id)
"""
_ENVELOPE_HEAD = struct.Struct("!hiii16siqiq")  # 8 fields; n; event_id; asset_id; ts
_LENGTH = struct.Struct("!i")
_JSONB_EMPTY = _LENGTH.pack(3) + b"\x01{}"


def _tags_jsonb(tags: dict) -> bytes:
    """A binary-COPY jsonb field (length, version 1, JSON text) for ``tags``."""
    if not tags:
        return _JSONB_EMPTY
    try:
        text = msgspec.json.encode(tags)
    except UnicodeEncodeError:  # a lone surrogate: spelt as an escape, which PostgreSQL refuses
        text = json.dumps(tags).encode()
    return _LENGTH.pack(len(text) + 1) + b"\x01" + text


def _envelope_rows(valid, source: str, now) -> bytes:
    """Binary COPY body of the stage table for ``valid`` (see ``_copy_samples`` for the format).

    ``n`` is the event's index in ``valid``, so the insert can name the duplicates by number.
    """
    source_field = _LENGTH.pack(len(source)) + source.encode()
    now_field = struct.pack("!iq", 8, (now - _PG_EPOCH) // _MICROSECOND)
    parts = [_COPY_HEADER]
    qualities: dict[str, bytes] = {}
    for n, (event, asset) in enumerate(valid):
        quality = qualities.get(event.quality)
        if quality is None:
            quality = qualities[event.quality] = \
                _LENGTH.pack(len(event.quality)) + event.quality.encode()
        parts.append(_ENVELOPE_HEAD.pack(8, 4, n, 16, event.event_id.bytes, 8, asset.id, 8,
                                         (event.ts - _PG_EPOCH) // _MICROSECOND))
        parts += (quality, _tags_jsonb(event.tags), source_field, now_field)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _insert_events(cursor, valid, source: str, now) -> set[int]:
    """Insert the event envelopes, skipping known event_ids; return the indices of those skipped.

    The envelopes are COPY'd (binary) into a per-session temp table first (emptied at commit,
    and before use in case the caller's transaction spans several batches): binding thousands
    of array elements as query parameters costs more than the COPY. The insert answers with the
    numbers of the duplicates only, usually none, so nothing is sent back per new event.
    """
    cursor.execute(_STAGE_DDL)
    with cursor.copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_envelope_rows(valid, source, now))
    cursor.execute(_INSERT_STAGED)
    return {row[0] for row in cursor.fetchall()}


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_ROW_TS = struct.Struct("!hiq")  # 4 fields; ts: int64 microseconds since 2000-01-01 UTC
_ROW_SERIES = struct.Struct("!iqi")  # asset_id (int8); metric's length (its bytes follow)
_VALUE = struct.Struct("!id")  # float8 length and value


def _copy_samples(cursor, fresh) -> int:
    """Binary COPY of one narrow row per metric of each fresh event; return the row count.

    Rows are encoded here (PostgreSQL's documented binary COPY format: int16 field count, then
    int32 length + big-endian value per field; timestamptz as int64 microseconds since
    2000-01-01 UTC) rather than by ``write_row``: three byte strings per row, the first shared
    by the event's rows and the second by every row of its series, instead of four dumper
    calls; and the cheapest format for the server to parse.
    """
    parts = [_COPY_HEADER]
    series: dict[tuple[int, str], bytes] = {}
    count = 0
    for event, asset in fresh:
        head = _ROW_TS.pack(4, 8, (event.ts - _PG_EPOCH) // _MICROSECOND)
        for metric, value in event.metrics.items():
            middle = series.get((asset.id, metric))
            if middle is None:
                name = metric.encode()
                middle = series[asset.id, metric] = _ROW_SERIES.pack(8, asset.id, len(name)) + name
            parts += (head, middle, _VALUE.pack(8, value))
        count += len(event.metrics)
    parts.append(_COPY_TRAILER)
    with cursor.copy(
        "COPY telemetry_telemetrysample (ts, asset_id, metric, value) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(b"".join(parts))
    return count


def _dirty_ranges(fresh) -> dict[int, list]:
    ranges: dict[int, list] = {}
    for event, asset in fresh:
        span = ranges.get(asset.id)
        if span is None:
            ranges[asset.id] = [event.ts, event.ts]
        elif event.ts < span[0]:
            span[0] = event.ts
        elif event.ts > span[1]:
            span[1] = event.ts
    return ranges


def _store(valid, source: str, report: IngestReport) -> None:
    now = timezone.now()
    with connection.cursor() as wrapper, connection.wrap_database_errors:
        cursor = wrapper.cursor
        skipped = _insert_events(cursor, valid, source, now)
        fresh = [pair for n, pair in enumerate(valid) if n not in skipped] if skipped else valid
        report.samples = _copy_samples(cursor, fresh)
        mark_dirty(cursor, _dirty_ranges(fresh))
        record_reported(cursor, ((a.id, e.ts, e.metrics) for e, a in fresh), now)
    report.accepted = len(fresh)
    report.duplicates += len(valid) - len(fresh)
    report.asset_ids = {a.id for _, a in fresh}
    report.accepted_ts = [e.ts for e, _ in fresh]


def store_dead_letters(items: list[tuple[RawPayload, str]], *, source: str) -> None:
    """Keep each (payload, reason) whole in the dead-letter table (caller's transaction).

    Payloads are stored as text up to ``DEAD_LETTER_MAX_CHARS`` (NUL spelt ``\\x00``),
    reasons up to 2,000 characters.
    """
    DeadLetter.objects.bulk_create(
        DeadLetter(source=source, topic=payload.topic[:512].replace("\x00", ""),
                   reason=reason[:2000].replace("\x00", "\\x00"),
                   payload=_payload_text(payload.body)[:DEAD_LETTER_MAX_CHARS])
        for payload, reason in items
    )


def ingest_batch(
    payloads: list[RawPayload], *, source: str, twins: set[str] | None = None,
    after_commit: Callable[[list[int]], None] | None = None,
) -> IngestReport:
    """Validate and store a batch of telemetry.v1 payloads in one transaction.

    Valid, new events are written as an envelope row (de-duplicated on ``event_id`` with
    ``ON CONFLICT DO NOTHING``) and narrow sample rows written with COPY. Invalid payloads go to
    the dead-letter table with their reason in the same transaction, so the batch is stored
    whole or not at all (a caller that acks only after this returns loses nothing). After
    commit, detection is enqueued, in one task, for the assets that received samples, each
    isolated (``telemetry.handoff``, stage ``DETECT``): failures are recorded on the asset,
    never raised here.
    ``twins`` (slugs) limits which twins the caller may write to; others are rejected as
    unknown assets. ``after_commit``, if given, receives the sorted asset ids instead and
    becomes responsible for detection (the MQTT subscriber hands them to its detection thread,
    so that its acknowledgements never wait for detection).

    Returns an ``IngestReport``; never raises for bad payloads. Database errors propagate.
    """
    report = IngestReport()
    valid = _validate(payloads, report, twins)
    with transaction.atomic():
        if valid:
            _store(valid, source, report)
        if report.rejected:
            store_dead_letters([(payloads[i], r) for i, r in report.rejected], source=source)
        if report.asset_ids:
            # robust: whatever detection does, the batch is stored and the caller is answered.
            notify = after_commit or partial(handoff.send, handoff.DETECT)
            transaction.on_commit(lambda: notify(sorted(report.asset_ids)), robust=True)
    return report


def enqueue_detection(asset_ids: list[int]) -> None:
    """Hand the assets to detection in one ``detect_anomalies_of`` task.

    With a broker that is one message whatever the number of assets; with eager Celery the
    task runs here, each asset isolated (``telemetry.detection.detect_isolated`` records its
    own failures, so one asset's failure never stops the next). A failure to enqueue is logged
    with its traceback and recorded on every asset of the task.
    """
    from telemetry.detection import record_failure
    from telemetry.tasks import detect_anomalies_of

    if not asset_ids:
        return
    try:
        detect_anomalies_of.delay(list(asset_ids))
    except Exception as exc:
        log.exception("could not run detection of assets %s", asset_ids)
        for asset_id in asset_ids:
            record_failure(asset_id, exc, stage="enqueue")
