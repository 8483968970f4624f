"""Turning raw telemetry payloads into validated events, or a precise reason why not.

Two paths give the same answer. ``parse_event`` first tries ``_fast_event``, a hand-written check
of the common, well-formed case (about 20x faster than ``jsonschema``); anything it is not sure
about — every invalid document and any unusual but valid one — goes to the reference path (the
``jsonschema`` validator of telemetry.v1 plus the checks a schema cannot express), which also
produces the error message. The fast path is therefore only ever *sound*: it accepts a document
only if each of its checks is at least as strict as the schema keyword it stands for, and builds
the event with the same helpers as the reference path. It runs only for the exact schema it was
written against (``FAST_PATH_SCHEMA_SHA256``); a changed schema switches it off until reviewed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from twins.schemas import load_schema, validator

log = logging.getLogger(__name__)


class InvalidEvent(ValueError):
    """The payload is not an acceptable telemetry.v1 event; ``str(exc)`` is the reason."""


@dataclass(frozen=True, slots=True)
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
    if list(error.absolute_path) == ["ts"] and error.validator == "format":
        # Say *what* is wrong with the date-time (with or without rfc3339-validator installed).
        try:
            _parse_ts(doc["ts"])
        except InvalidEvent as exc:
            return str(exc)
    where = "/".join(str(p) for p in error.absolute_path) or "(event)"
    return f"telemetry.v1: {where}: {error.message[:300]}"


def _parse_ts(raw: str) -> datetime:
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(f"telemetry.v1: ts: {raw!r} is not an RFC 3339 date-time") from exc
    if ts.tzinfo is None:
        raise InvalidEvent("telemetry.v1: ts: a UTC offset is required (e.g. 'Z')")
    if ts < EARLIEST_TS:
        raise InvalidEvent(f"telemetry.v1: ts: {raw} is before {EARLIEST_TS:%Y-%m-%d}: "
                           "not a reading any connected sensor took")
    limit = timezone.now() + timedelta(seconds=settings.INGEST_MAX_FUTURE_SECONDS)
    if ts > limit:
        raise InvalidEvent(f"telemetry.v1: ts: {raw} is in the future beyond the allowed skew")
    return ts


#: Readings dated before the Unix epoch are refused: a sensor clock reset to its zero value
#: (year 1, or 1900 on some RTCs) is a fault, not history; historians backfill within decades.
EARLIEST_TS = datetime(1970, 1, 1, tzinfo=UTC)


def _check_tags(tags: dict) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000; the schema allows it, the database does not.
    for key, value in tags.items():
        if "\x00" in key or "\x00" in value:
            raise InvalidEvent(f"telemetry.v1: tags/{key[:64]!r}: NUL characters are not stored")


def _reference_event(doc: object) -> TelemetryEventIn:
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
    tags = doc.get("tags", {})
    _check_tags(tags)
    return TelemetryEventIn(
        event_id=event_id, twin_id=doc["twin_id"], asset_id=doc["asset_id"],
        ts=_parse_ts(doc["ts"]), metrics=metrics, tags=tags,
        quality=doc.get("quality", "good"),
    )


# --- the fast path ------------------------------------------------------------------------------
#: SHA-256 of the canonical telemetry.v1 schema the fast path was checked against.
FAST_PATH_SCHEMA_SHA256 = "cb626c3cc297b242e275dbec7f36fe27b351e724ad93bdb1598688f66788fd8e"


def schema_fingerprint(schema: dict) -> str:
    """SHA-256 of ``schema`` as canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode())\
        .hexdigest()


_SCHEMA = load_schema("telemetry.v1")
_PROPS = _SCHEMA["properties"]
_METRICS = _PROPS["metrics"]
_TAGS = _PROPS["tags"]
_REQUIRED = frozenset(_SCHEMA["required"])
_ALLOWED = frozenset(_PROPS)
# The schema's own patterns, applied as jsonschema applies them (re.search).
_SLUG = {key: re.compile(_PROPS[key]["pattern"]) for key in ("twin_id", "asset_id")}
_METRIC_NAME = re.compile(_METRICS["propertyNames"]["pattern"])
_VALUE_MIN = _METRICS["additionalProperties"]["minimum"]
_VALUE_MAX = _METRICS["additionalProperties"]["maximum"]
_QUALITIES = frozenset(_PROPS["quality"]["enum"])
# Stricter than format "uuid" (jsonschema: UUID() parses, dashes at 8/13/18/23) and "date-time"
# (RFC 3339, checked when rfc3339-validator is installed): the canonical forms only.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
FAST_PATH_ENABLED = schema_fingerprint(_SCHEMA) == FAST_PATH_SCHEMA_SHA256
if not FAST_PATH_ENABLED:
    log.warning("telemetry.v1 changed: the fast validation path is off until it is reviewed")


def _fast_metrics(metrics: object) -> dict[str, float] | None:
    if type(metrics) is not dict or not (
        _METRICS["minProperties"] <= len(metrics) <= _METRICS["maxProperties"]
    ):
        return None
    out = {}
    for name, value in metrics.items():
        kind = type(value)
        # NaN fails both comparisons; bool is neither float nor int by ``type``.
        if (kind is not float and kind is not int) or not _VALUE_MIN <= value <= _VALUE_MAX:
            return None
        if not _METRIC_NAME.search(name):
            return None
        out[name] = float(value)
    return out


def _fast_tags(tags: object) -> bool:
    if type(tags) is not dict or len(tags) > _TAGS["maxProperties"]:
        return False
    limit = _TAGS["additionalProperties"]["maxLength"]
    return all(
        type(v) is str and len(v) <= limit and "\x00" not in v and "\x00" not in k
        for k, v in tags.items()
    )


def _fast_quality(quality: object) -> bool:
    return type(quality) is str and quality in _QUALITIES


def _fast_envelope(doc: dict) -> bool:
    event_id, ts = doc["event_id"], doc["ts"]
    return (
        type(event_id) is str and _UUID.fullmatch(event_id) is not None
        and type(ts) is str and _RFC3339.fullmatch(ts) is not None
        and all(type(doc[k]) is str and _SLUG[k].search(doc[k]) for k in _SLUG)
        and ("tags" not in doc or _fast_tags(doc["tags"]))
        and _fast_quality(doc.get("quality", "good"))
    )


def _fast_event(doc: object) -> TelemetryEventIn | None:
    """The event if ``doc`` is certainly valid up to its timestamp's value, else ``None``.

    Raises ``InvalidEvent`` only from ``_parse_ts``, exactly as the reference path would at
    that point (every earlier reference check has passed).
    """
    if not FAST_PATH_ENABLED or type(doc) is not dict:
        return None
    if not (_REQUIRED <= doc.keys() <= _ALLOWED) or not _fast_envelope(doc):
        return None
    metrics = _fast_metrics(doc["metrics"])
    if metrics is None:
        return None
    return TelemetryEventIn(
        event_id=uuid.UUID(doc["event_id"]), twin_id=doc["twin_id"], asset_id=doc["asset_id"],
        ts=_parse_ts(doc["ts"]), metrics=metrics, tags=doc.get("tags", {}),
        quality=doc.get("quality", "good"),
    )


def parse_event(doc: object) -> TelemetryEventIn:
    """Validate a decoded JSON document against telemetry.v1 and return the typed event.

    Checks the JSON Schema, then what a schema cannot say: the timestamp parses, carries an
    offset and is not further in the future than ``INGEST_MAX_FUTURE_SECONDS``; every value is a
    finite number; tags hold no NUL character (PostgreSQL cannot store it). Raises
    ``InvalidEvent`` with the first problem found. Well-formed events take the fast path (see the
    module docstring); the result is the same either way.
    """
    return _fast_event(doc) or _reference_event(doc)
