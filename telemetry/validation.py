"""Turning raw telemetry payloads into validated events, or a precise reason why not.

Two paths give the same answer. The fast path is telemetry.v1 written as a msgspec ``Struct``
(``_Envelope``): ``parse_payload`` decodes and validates JSON text with it in one compiled pass,
``parse_event`` converts an already-decoded document with it. Anything it is not sure about —
every invalid document and any unusual but valid one — goes to the reference path (``json``, the
``jsonschema`` validator of telemetry.v1 plus the checks a schema cannot express), which also
produces the error message. The fast path is therefore only ever *sound*: it accepts a document
only if each of its constraints is at least as strict as the schema keyword it stands for, and
builds the event with the same helpers as the reference path. It runs only for the exact schema
it was written against (``FAST_PATH_SCHEMA_SHA256``); a changed schema switches it off until
reviewed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from django.conf import settings
from django.utils import timezone

from twins.schemas import load_schema, validator

log = logging.getLogger(__name__)


class InvalidEvent(ValueError):
    """The payload is not an acceptable telemetry.v1 event; ``str(exc)`` is the reason."""


class TelemetryEventIn(msgspec.Struct, frozen=True, kw_only=True):
    """A validated telemetry.v1 event. ``metrics`` maps metric name to a finite float.

    Immutable, compared by value (a msgspec ``Struct``: built in C, several times cheaper than
    a frozen dataclass on the ingest hot path).
    """

    event_id: uuid.UUID
    twin_id: str
    asset_id: str
    ts: datetime
    metrics: dict[str, float]
    tags: dict[str, str] = msgspec.field(default_factory=dict)
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
FAST_PATH_ENABLED = schema_fingerprint(_SCHEMA) == FAST_PATH_SCHEMA_SHA256
if not FAST_PATH_ENABLED:
    log.warning("telemetry.v1 changed: the fast validation path is off until it is reviewed")

# The Struct checks types, sizes and bounds in C; the patterns are checked in ``_from_envelope``
# with the schema's own regular expressions, applied as jsonschema applies them (``re.search``),
# and remembered for the few distinct slugs and metric names a plant sends (a pattern check
# costs more than decoding the whole event). Stricter than format "uuid" (jsonschema: UUID()
# parses, dashes at 8/13/18/23) and "date-time" (RFC 3339, checked when rfc3339-validator is
# installed): the canonical forms only, ASCII digits, nothing after them.
_SLUG = {key: re.compile(_PROPS[key]["pattern"]) for key in ("twin_id", "asset_id")}
_METRIC_NAME = re.compile(_METRICS["propertyNames"]["pattern"])
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                      r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
# msgspec's float takes JSON integers and floats, never booleans; NaN/Infinity are not JSON and
# a Python NaN fails the bounds.
_Value = Annotated[float, msgspec.Meta(ge=_METRICS["additionalProperties"]["minimum"],
                                       le=_METRICS["additionalProperties"]["maximum"])]
_Metrics = Annotated[dict[str, _Value], msgspec.Meta(
    min_length=_METRICS["minProperties"], max_length=_METRICS["maxProperties"])]
_Tags = Annotated[
    dict[str, Annotated[str, msgspec.Meta(max_length=_TAGS["additionalProperties"]["maxLength"])]],
    msgspec.Meta(max_length=_TAGS["maxProperties"])]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """telemetry.v1 as a msgspec type; ``_from_envelope`` adds the patterns."""

    event_id: str
    twin_id: str
    asset_id: str
    ts: str
    metrics: _Metrics
    tags: _Tags = msgspec.field(default_factory=dict)
    quality: Literal[tuple(_PROPS["quality"]["enum"])] = "good"


_decode = msgspec.json.Decoder(_Envelope).decode


class _Matched:
    """Strings known to match a pattern: a set that forgets everything past ``limit`` entries."""

    def __init__(self, pattern: re.Pattern, limit: int = 10_000) -> None:
        self.pattern, self.limit, self.known = pattern, limit, set()

    def all(self, names) -> bool:
        """True when every string of ``names`` matches (``re.search``, as jsonschema does)."""
        if self.known.issuperset(names):
            return True
        if not all(self.pattern.search(name) for name in names):
            return False
        if len(self.known) > self.limit:
            self.known = set()
        self.known.update(names)
        return True


_METRIC_NAMES = _Matched(_METRIC_NAME)
_SLUGS = _Matched(_SLUG["twin_id"]) if _SLUG["twin_id"].pattern == _SLUG["asset_id"].pattern \
    else None


def _slugs_match(doc: _Envelope) -> bool:
    if _SLUGS is not None:
        return _SLUGS.all((doc.twin_id, doc.asset_id))
    return all(_SLUG[key].search(getattr(doc, key)) for key in _SLUG)


#: (INGEST_MAX_FUTURE_SECONDS, a past "now" + that many seconds): a bound on ``ts`` never
#: above the one ``_parse_ts`` computes, so the fast path needs no clock read per event.
_future_limit: tuple[int, datetime] = (0, EARLIEST_TS)


def _fast_ts(raw: str) -> datetime | None:
    """``_parse_ts(raw)`` when it certainly accepts ``raw``, else ``None``."""
    global _future_limit
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    skew, limit = _future_limit
    if skew != settings.INGEST_MAX_FUTURE_SECONDS or ts > limit:
        skew = settings.INGEST_MAX_FUTURE_SECONDS
        limit = timezone.now() + timedelta(seconds=skew)
        _future_limit = (skew, limit)
    return ts if EARLIEST_TS <= ts <= limit else None


def _from_envelope(doc: _Envelope) -> TelemetryEventIn | None:
    tags = doc.tags
    if not (_UUID.fullmatch(doc.event_id) and _RFC3339.fullmatch(doc.ts) and _slugs_match(doc)
            and _METRIC_NAMES.all(doc.metrics)):
        return None
    if tags and any("\x00" in k or "\x00" in v for k, v in tags.items()):
        return None  # the reference path says which tag
    ts = _fast_ts(doc.ts)
    if ts is None:
        return None  # the reference path says what is wrong with it
    return TelemetryEventIn(
        event_id=msgspec.convert(doc.event_id, uuid.UUID), twin_id=doc.twin_id,
        asset_id=doc.asset_id, ts=ts, metrics=doc.metrics, tags=tags, quality=doc.quality,
    )


def _fast_event(doc: object) -> TelemetryEventIn | None:
    """The event if ``doc`` (decoded JSON) is certainly valid, else ``None``; never raises."""
    if not FAST_PATH_ENABLED:
        return None
    try:
        return _from_envelope(msgspec.convert(doc, _Envelope))
    except msgspec.ValidationError:
        return None


def _fast_payload(raw: bytes | str) -> TelemetryEventIn | None:
    """``_fast_event`` straight from JSON text: one compiled decode-and-validate pass."""
    if not FAST_PATH_ENABLED:
        return None
    try:
        return _from_envelope(_decode(raw))
    except msgspec.DecodeError:  # ValidationError is a DecodeError: invalid or unusual
        return None


def parse_event(doc: object) -> TelemetryEventIn:
    """Validate a decoded JSON document against telemetry.v1 and return the typed event.

    Checks the JSON Schema, then what a schema cannot say: the timestamp parses, carries an
    offset and is not further in the future than ``INGEST_MAX_FUTURE_SECONDS``; every value is a
    finite number; tags hold no NUL character (PostgreSQL cannot store it). Raises
    ``InvalidEvent`` with the first problem found. Well-formed events take the fast path (see the
    module docstring); the result is the same either way.
    """
    return _fast_event(doc) or _reference_event(doc)


def parse_payload(body: bytes | str | dict) -> TelemetryEventIn:
    """``parse_event`` of a raw payload: JSON text (``bytes``/``str``) or a decoded ``dict``.

    Well-formed JSON text is decoded and validated in one compiled pass; anything else is
    decoded by ``decode_json`` and checked by the reference path, which gives the reason.
    Raises ``InvalidEvent``.
    """
    if isinstance(body, dict):
        return parse_event(body)
    return _fast_payload(body) or _reference_event(decode_json(body))
