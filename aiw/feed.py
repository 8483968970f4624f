"""Appending to and reading from the change feed (the transactional outbox)."""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import QuerySet

from aiw.models import ChangeEvent

log = logging.getLogger(__name__)
FEED_GROUP = "aiw.feed"
CURSOR_PREFIX = "v1:"


class InvalidCursor(ValueError):
    """The cursor is not one this server issued (HTTP 410 with resync instructions)."""


def encode_cursor(event_id: int) -> str:
    """Opaque cursor for 'after event ``event_id``' (url-safe base64 of ``v1:<id>``)."""
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of ``encode_cursor``; ``"0"`` or ``""`` means 'from the beginning'.

    Raises ``InvalidCursor`` for anything else that does not decode to ``v1:<id>`` with an id
    that is not beyond the newest event.
    """
    if cursor in ("", "0"):
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not valid base64") from exc
    if not raw.startswith(CURSOR_PREFIX) or not raw[len(CURSOR_PREFIX) :].isdigit():
        raise InvalidCursor("cursor was not issued by this server")
    event_id = int(raw[len(CURSOR_PREFIX) :])
    newest = ChangeEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    if event_id > newest:
        raise InvalidCursor("cursor points past the newest event (was the database reset?)")
    return event_id


def append_event(
    *, type: str, resource_type: str, resource_id: str, operation: str, twin, actor: str,
    data: dict, at: datetime,
) -> ChangeEvent:
    """Write one ChangeEvent in the current transaction and notify live subscribers on commit.

    Call through ``policy.audit.record_change``, which holds the sequencing lock.
    """
    event = ChangeEvent.objects.create(
        type=type, resource_type=resource_type, resource_id=resource_id, operation=operation,
        twin=twin, actor=actor, data=data, created_at=at,
    )
    transaction.on_commit(lambda: notify_subscribers(event.id))
    return event


def notify_subscribers(event_id: int) -> None:
    """Tell live-stream consumers that events up to ``event_id`` are committed.

    The message carries only the id; consumers read the events from the database, so a lost
    notification delays delivery until the next one but never loses an event.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(FEED_GROUP, {"type": "feed.committed", "id": event_id})
    except Exception:  # a feed notification must never fail the change that committed
        log.exception("could not notify feed subscribers of event %s", event_id)


def events_after(after_id: int, queryset: QuerySet[ChangeEvent], limit: int) -> list[ChangeEvent]:
    """Up to ``limit`` events with id > ``after_id`` from ``queryset``, in feed order."""
    return list(queryset.filter(id__gt=after_id).order_by("id")[:limit])
