"""The only code that writes telemetry: ``ingest_batch`` (MQTT subscriber, HTTP, demo replay)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from telemetry.models import DeadLetter
from telemetry.validation import InvalidEvent, TelemetryEventIn, decode_json, parse_event
from twins.models import Asset

log = logging.getLogger(__name__)
DEAD_LETTER_MAX_CHARS = 1_000_000


@dataclass(frozen=True)
class RawPayload:
    """One received payload: raw bytes/str (or an already-decoded document) and its topic."""

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


def _topic_matches(topic: str, event: TelemetryEventIn) -> bool:
    if not topic:
        return True
    parts = topic.split("/")
    return len(parts) == 4 and parts[1:] == [event.twin_id, event.asset_id, "telemetry"]


def _assets_for(events: list[TelemetryEventIn]) -> dict[tuple[str, str], Asset]:
    pairs = {(e.twin_id, e.asset_id) for e in events}
    twins = {t for t, _ in pairs}
    found = Asset.objects.filter(twin__slug__in=twins).select_related("twin")
    return {(a.twin.slug, a.slug): a for a in found if (a.twin.slug, a.slug) in pairs}


def _check(event: TelemetryEventIn, topic: str, assets: dict, twins: set[str] | None) -> Asset:
    if not _topic_matches(topic, event):
        raise InvalidEvent(f"topic {topic!r} does not match twin_id/asset_id of the event")
    asset = assets.get((event.twin_id, event.asset_id))
    if asset is None or (twins is not None and event.twin_id not in twins):
        raise InvalidEvent(f"unknown asset {event.twin_id}/{event.asset_id}")
    declared = set(asset.metric_names)
    unknown = sorted(set(event.metrics) - declared) if declared else []
    if unknown:
        raise InvalidEvent(f"metrics not declared on asset {asset}: {', '.join(unknown)}")
    return asset


def _validate(payloads: list[RawPayload], report: IngestReport, twins: set[str] | None):
    parsed: list[tuple[int, TelemetryEventIn, str]] = []
    for index, payload in enumerate(payloads):
        try:
            doc = payload.body if isinstance(payload.body, dict) else decode_json(payload.body)
            parsed.append((index, parse_event(doc), payload.topic))
        except InvalidEvent as exc:
            report.rejected.append((index, str(exc)))
    assets = _assets_for([e for _, e, _ in parsed])
    valid: list[tuple[TelemetryEventIn, Asset]] = []
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
        return json.dumps(body, default=str)
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="backslashreplace")
    return body


def _insert_events(cursor, valid, source: str, now) -> set:
    """Insert the event envelopes, skipping known event_ids; return the ids actually new."""
    cursor.execute(
        """
        INSERT INTO telemetry_telemetryevent
            (event_id, asset_id, ts, quality, tags, source, received_at)
        SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[], %s::text[],
                             %s::jsonb[], %s::text[], %s::timestamptz[])
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
        """,
        [
            [e.event_id for e, _ in valid], [a.pk for _, a in valid], [e.ts for e, _ in valid],
            [e.quality for e, _ in valid], [Jsonb(e.tags) for e, _ in valid],
            [source] * len(valid), [now] * len(valid),
        ],
    )
    return {row[0] for row in cursor.fetchall()}


def _copy_samples(cursor, rows) -> None:
    with cursor.copy(
        "COPY telemetry_telemetrysample (ts, asset_id, metric, value) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)


def ingest_batch(
    payloads: list[RawPayload], *, source: str, twins: set[str] | None = None
) -> IngestReport:
    """Validate and store a batch of telemetry.v1 payloads in one transaction.

    Valid, new events are written as an envelope row (de-duplicated on ``event_id`` with
    ``ON CONFLICT DO NOTHING``) and narrow sample rows written with COPY. Invalid payloads go to
    the dead-letter table with their reason in the same transaction, so the batch is stored
    whole or not at all (a caller that acks only after this returns loses nothing). After
    commit, detection is enqueued for every asset that received samples. ``twins`` (slugs)
    limits which twins the caller may write to; others are rejected as unknown assets.

    Returns an ``IngestReport``; never raises for bad payloads. Database errors propagate.
    """
    report = IngestReport()
    valid = _validate(payloads, report, twins)
    now = timezone.now()
    with transaction.atomic():
        if valid:
            with connection.cursor() as cursor:
                new_ids = _insert_events(cursor.cursor, valid, source, now)
                fresh = [(e, a) for e, a in valid if e.event_id in new_ids]
                rows = [(e.ts, a.pk, m, v) for e, a in fresh for m, v in e.metrics.items()]
                _copy_samples(cursor.cursor, rows)
            report.accepted = len(fresh)
            report.duplicates += len(valid) - len(fresh)
            report.samples = len(rows)
            report.asset_ids = {a.pk for _, a in fresh}
        if report.rejected:
            DeadLetter.objects.bulk_create(
                DeadLetter(
                    source=source, topic=payloads[i].topic[:512], reason=reason[:2000],
                    payload=_payload_text(payloads[i].body)[:DEAD_LETTER_MAX_CHARS],
                )
                for i, reason in report.rejected
            )
        if report.asset_ids:
            transaction.on_commit(lambda: _enqueue_detection(sorted(report.asset_ids)))
    return report


def _enqueue_detection(asset_ids: list[int]) -> None:
    from telemetry.tasks import detect_anomalies

    for asset_id in asset_ids:
        detect_anomalies.delay(asset_id)
