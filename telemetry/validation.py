"""Turning raw telemetry payloads into validated events, or a precise reason why not."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from aiw.schemas import validator


class InvalidEvent(ValueError):
    """The payload is not an acceptable telemetry.v1 event; ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class TelemetryEventIn:
    """A validated telemetry.v1 event. ``metrics`` maps metric name to a finite float."""

    event_id: uuid.UUID
    twin_id: str
    asset_id: str
    ts: datetime
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    quality: str = "good"


def _reject_constant(name: str) -> float:
    raise InvalidEvent(f"JSON constant {name} is not a number telemetry accepts")


def decode_json(raw: bytes | str) -> object:
    """Parse JSON text, rejecting NaN/Infinity and invalid UTF-8 with ``InvalidEvent``."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidEvent("invalid JSON: nested too deeply") from exc


def _schema_error(doc: object) -> str | None:
    error = next(iter(validator("telemetry.v1").iter_errors(doc)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(event)"
    return f"telemetry.v1: {where}: {error.message[:300]}"


def _parse_ts(raw: str) -> datetime:
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(f"telemetry.v1: ts: {raw!r} is not an RFC 3339 date-time") from exc
    if ts.tzinfo is None:
        raise InvalidEvent("telemetry.v1: ts: a UTC offset is required (e.g. 'Z')")
    limit = timezone.now() + timedelta(seconds=settings.INGEST_MAX_FUTURE_SECONDS)
    if ts > limit:
        raise InvalidEvent(f"telemetry.v1: ts: {raw} is in the future beyond the allowed skew")
    return ts


def parse_event(doc: object) -> TelemetryEventIn:
    """Validate a decoded JSON document against telemetry.v1 and return the typed event.

    Checks the JSON Schema, then what a schema cannot say: the timestamp parses, carries an
    offset and is not further in the future than ``INGEST_MAX_FUTURE_SECONDS``; every value is a
    finite number. Raises ``InvalidEvent`` with the first problem found.
    """
    problem = _schema_error(doc)
    if problem:
        raise InvalidEvent(problem)
    assert isinstance(doc, dict)  # the schema says so
    try:
        event_id = uuid.UUID(doc["event_id"])
    except ValueError as exc:
        raise InvalidEvent("telemetry.v1: event_id: not a UUID") from exc
    metrics = {}
    for name, value in doc["metrics"].items():
        if isinstance(value, bool) or not math.isfinite(value):
            raise InvalidEvent(f"telemetry.v1: metrics/{name}: not a finite number")
        metrics[name] = float(value)
    return TelemetryEventIn(
        event_id=event_id, twin_id=doc["twin_id"], asset_id=doc["asset_id"],
        ts=_parse_ts(doc["ts"]), metrics=metrics, tags=doc.get("tags", {}),
        quality=doc.get("quality", "good"),
    )
