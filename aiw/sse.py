"""``GET /subscribe``: the change feed as Server-Sent Events (an async view over ASGI).

Framing (https://html.spec.whatwg.org/multipage/server-sent-events.html): every change event
is ``id: <cursor>`` / ``event: <type>`` / ``data: <change-event.v1 JSON>`` and a blank line.
Comment lines (``: keep-alive``) every ``AIW_SSE_HEARTBEAT_SECONDS`` keep proxies and clients
from timing out. Resumes after ``Last-Event-ID`` (sent by EventSource on reconnect) or
``?since=``, with ``/diff`` semantics; ``types`` and ``twin`` filter as in ``/diff``.
A stream ends with a control event (stream-control.v1): ``aiw.reconnect`` (the client is too
slow; resume from ``cursor``) or ``aiw.error`` (access ended).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from rest_framework import exceptions

from aiw.authentication import REALM, Principal, authenticate_stream
from aiw.db import run_db
from aiw.feed import decode_cursor
from aiw.hub import get_hub
from aiw.streams import (
    AccessRevoked,
    Follower,
    SlowConsumer,
    error_message,
    reconnect_message,
)
from aiw.throttling import retry_after
from twins.feed import InvalidCursor
from twins.feed_scope import FeedFilter, Scope, scope_for
from twins.problems import problem

HEARTBEAT = b": keep-alive\n\n"
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")


def control_frame(message: dict, cursor: str | None = None) -> bytes:
    """One SSE frame for a stream-control.v1 message (``event:`` is its ``type``)."""
    head = f"id: {cursor}\n" if cursor else ""
    data = json.dumps(message, separators=(",", ":"))
    return f"{head}event: {message['type']}\ndata: {data}\n\n".encode()


async def _authenticate(request: HttpRequest) -> Principal | HttpResponse:
    try:
        principal = await run_db(authenticate_stream, request)
    except exceptions.APIException as exc:
        status = exc.status_code
        headers = {"WWW-Authenticate": REALM} if status == 401 else None
        return problem(status, str(exc.default_detail), str(exc.detail), headers=headers)
    if principal is None:
        return problem(401, "Authentication credentials were not provided.",
                       "send Authorization: Bearer <token> or a session cookie",
                       headers={"WWW-Authenticate": REALM})
    return principal


async def _admit(principal: Principal) -> HttpResponse | None:
    """429 when the caller is over its rate or its number of open streams."""
    if principal.token is not None:
        wait = await run_db(retry_after, principal.token)
        if wait is not None:
            return problem(429, "Request was throttled.", "the token's rate limit is spent",
                           headers={"Retry-After": str(max(1, round(wait)))})
    limit = settings.AIW_MAX_STREAMS_PER_CALLER
    if get_hub().count(principal.key) >= limit:
        return problem(429, "Too many streams", f"at most {limit} open streams per caller",
                       headers={"Retry-After": "5"})
    return None


def _open(cursor: str, user) -> tuple[int, Scope]:
    return decode_cursor(cursor), scope_for(user)


async def subscribe(request: HttpRequest) -> HttpResponse:
    """GET /subscribe?since=&types=&twin= — see the module docstring. Errors before the
    stream starts are problem+json: 401, 403, 400 (bad twin), 410 (cursor), 429."""
    if request.method != "GET":
        return problem(405, "Method Not Allowed", "use GET", headers={"Allow": "GET"})
    principal = await _authenticate(request)
    if isinstance(principal, HttpResponse):
        return principal
    refused = await _admit(principal)
    if refused is not None:
        return refused
    twin = request.GET.get("twin") or None
    if twin is not None and not SLUG.match(twin):
        return problem(400, "Invalid twin", "twin must be a slug")
    cursor = request.headers.get("Last-Event-ID") or request.GET.get("since") or "0"
    try:
        after, scope = await run_db(_open, cursor, principal.user)
    except InvalidCursor as exc:
        return problem(410, "Cursor expired or unknown", str(exc), reason=exc.reason,
                       resync=request.build_absolute_uri(reverse("aiw-snapshot")))
    follower = Follower(principal, FeedFilter.parse(request.GET.get("types"), twin), after)
    await follower.start(scope)
    response = StreamingHttpResponse(
        _frames(follower), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _frames(follower: Follower) -> AsyncIterator[bytes]:
    # The server's send waits while the client's socket is full (uvicorn's flow control), so
    # a client that stops reading stops this generator; its queue overflows meanwhile and the
    # next batch ends the stream with aiw.reconnect.
    try:
        yield b"retry: 2000\n\n"
        while True:
            batch = await follower.next_batch()
            if batch is None:
                yield HEARTBEAT
            elif batch:  # one shared bytes object per batch: joined once by the hub
                yield batch[0].sse if len(batch) == 1 else b"".join(b.sse for b in batch)
    except SlowConsumer:
        yield control_frame(reconnect_message(follower.cursor, "slow_consumer"), follower.cursor)
    except AccessRevoked as exc:
        yield control_frame(error_message(401, "Access ended", str(exc)))
    finally:
        await follower.close()
