"""The change feed's bottom half: the cursor and the commit signal.

``ChangeEvent`` rows are the transactional outbox every channel reads (``/diff``, SSE,
WebSocket); ``twins.ledger.record_change`` writes them under the sequencing lock. This module
encodes the opaque cursor agents resume from, and announces commits with
the ``change_committed`` signal. The live-stream hubs (``aiw``) connect to that signal in
``AiwConfig.ready``; the ledger itself knows nothing of streams, so no app has to import the
protocol layer to record a change.
"""

from __future__ import annotations

import base64
import binascii

from django.dispatch import Signal

from twins.models import ChangeEvent

CURSOR_PREFIX = "v1:"

#: Sent after the commit that made a change event visible: ``event_id`` (int) is the event's
#: id. Receivers must be quick and must not raise: they run on the writer's thread.
change_committed = Signal()


class InvalidCursor(ValueError):
    """The cursor is unknown or expired (HTTP 410 with resync instructions).

    ``reason`` is ``"unknown"`` (not issued by this server, or past the newest event) or
    ``"expired"`` (the events after it were pruned).
    """

    def __init__(self, message: str, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason


def encode_cursor(event_id: int) -> str:
    """Opaque cursor for 'after event ``event_id``' (url-safe base64 of ``v1:<id>``)."""
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{event_id}".encode()).decode().rstrip("=")


def parse_cursor(cursor: str) -> int:
    """The event id inside ``cursor`` without any database check (``"0"``/``""`` → 0).

    Raises ``InvalidCursor`` when ``cursor`` does not decode to ``v1:<digits>``.
    """
    if cursor in ("", "0"):
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not valid base64") from exc
    digits = raw[len(CURSOR_PREFIX):]
    if not raw.startswith(CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 19:
        raise InvalidCursor("cursor was not issued by this server")
    return int(digits)


def newest_event_id() -> int:
    """Id of the newest committed event visible to this transaction (0 for an empty feed)."""
    return ChangeEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def feed_cursor() -> str:
    """The change feed's cursor now. A page takes it before reading its data and follows the
    feed from there, so no change between the read and the subscription is missed (one
    already shown may arrive again: the page only refreshes)."""
    return encode_cursor(newest_event_id())


def announce_commit(event_id: int) -> None:
    """The on-commit callback of every appended event: send ``change_committed``."""
    change_committed.send(sender=ChangeEvent, event_id=event_id)
