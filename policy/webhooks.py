"""Signed webhook requests (notification.v1 bodies) and how a receiver checks them.

Scheme (README, "Notifications"): the body is canonical JSON (``twins.ledger.canonical_json``);
``X-OpsTwin-Timestamp`` is the send time in Unix seconds; ``X-OpsTwin-Signature`` is
``sha256=`` + hex HMAC-SHA256 (RFC 2104) keyed with the subscription's secret over
``<timestamp>.<body>``. Signing the timestamp with the body lets a receiver refuse a captured
request replayed later (older than its tolerance, 5 minutes in ``verify``), the scheme Stripe
and Slack use. Every retry is signed afresh with its own timestamp; ``X-OpsTwin-Delivery``
stays the same, so a receiver can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

SIGNATURE_HEADER = "X-OpsTwin-Signature"
TIMESTAMP_HEADER = "X-OpsTwin-Timestamp"
DELIVERY_HEADER = "X-OpsTwin-Delivery"
EVENT_HEADER = "X-OpsTwin-Event"
TOLERANCE_SECONDS = 300


class WebhookFailed(Exception):
    """The receiver did not take the request: no connection, a timeout or a non-2xx answer
    (``status`` then holds the HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<64 hex digits>``: HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``
    (UTF-8)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers, body: bytes, *, now: float | None = None,
           tolerance_s: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: True if ``headers`` (a mapping) carry a valid signature of
    ``body`` with a timestamp no further than ``tolerance_s`` seconds from ``now``."""
    try:
        timestamp = int(headers.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, ""))


def post(url: str, body: bytes, *, secret: str, delivery_id: int, event: str,
         timeout_s: float) -> int:
    """POST ``body`` (JSON) to ``url`` signed with ``secret``; returns the 2xx status.

    Redirects are not followed (a signed body goes only where it was addressed). Raises
    WebhookFailed on a connection error, a timeout or a status outside 200..299.
    """
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "OpsTwin-Webhook/1",
               TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp,
                                                                              body),
               DELIVERY_HEADER: str(delivery_id), EVENT_HEADER: event}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s,
                              follow_redirects=False)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"HTTP {response.status_code} from the receiver",
                            status=response.status_code)
    return response.status_code
