"""WebSocket stream of the change feed (``/ws/feed?since=<cursor>&types=&twin=``).

Same events, filters, resume and limits as ``GET /subscribe`` (both use
``aiw.streams.Follower``): each text frame is one change-event.v1 object whose ``cursor``
resumes after it; a stream-control.v1 object (``type`` ``aiw.reconnect`` or ``aiw.error``)
precedes a close by the server. Authentication: a session cookie (with an allowed Origin,
checked by ``aiw.authentication.TokenOrOriginValidator`` in front of this app) or
``Authorization: Bearer <token>`` in the handshake.

Close codes: 4401 not authenticated, 4403 token lacks the read scope, 4400 invalid ``twin``,
4410 cursor expired or unknown (resync from ``/snapshot``), 4429 too many streams or rate
limit, 4408 too slow (resume from the cursor in the preceding ``aiw.reconnect``). A client
that reads nothing at all may miss that goodbye (the server gives up on a closing handshake
it gets no answer to); it resumes from the last event it did receive, which is the same cursor.

A plain ASGI application rather than a channels consumer: each event is one
``websocket.send`` handed straight to the server. Behind channels' session middleware and
consumer, every send also went through their wrappers (the session's lazy proxy consulted per
message), which cost a fifth of the server's CPU while streaming (``benchmarks/fanout.py
--transport ws``, profiled with py-spy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from django.conf import settings
from rest_framework import exceptions

from aiw.authentication import Principal, authenticate_socket
from aiw.db import run_db
from aiw.feed import decode_cursor
from aiw.hub import get_hub
from aiw.streams import AccessRevoked, Follower, SlowConsumer, error_message, reconnect_message
from aiw.throttling import retry_after
from twins.feed import InvalidCursor
from twins.feed_scope import FeedFilter, Scope, scope_for

log = logging.getLogger(__name__)
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
Send = Callable[[dict], Awaitable[None]]


async def feed_socket(scope: dict, receive: Callable, send: Send) -> None:
    """ASGI application of ``/ws/feed`` (one call per connection; see the module docstring).

    Runs until the client or the server closes the socket; frames the client sends are
    ignored.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    stream = FeedStream(send)
    try:
        await stream.open(scope)
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        await stream.stop()


def _open(cursor: str, user) -> tuple[int, Scope]:
    return decode_cursor(cursor), scope_for(user)


class FeedStream:
    """One socket's follower and the task that sends its events (``send``: the ASGI send)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.follower: Follower | None = None
        self.pump: asyncio.Task | None = None

    async def open(self, scope: dict) -> None:
        """Authenticate, accept and start following; or refuse or close with a close code."""
        try:
            principal = await authenticate_socket(scope)
        except exceptions.APIException as exc:  # before accept: the server answers 403
            await self.close(4000 + exc.status_code)
            return
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        await self.send({"type": "websocket.accept"})
        if await self._refused(principal):
            return
        twin = query.get("twin") or None
        if twin is not None and not SLUG.match(twin):
            await self._fail(400, "Invalid twin", "twin must be a slug", 4400)
            return
        try:
            after, feed_scope = await run_db(_open, query.get("since", "0"), principal.user)
        except InvalidCursor as exc:
            await self._fail(410, "Cursor expired or unknown", str(exc), 4410,
                             reason=exc.reason, resync="/snapshot")
            return
        self.follower = Follower(principal, FeedFilter.parse(query.get("types"), twin), after)
        await self.follower.start(feed_scope)
        self.pump = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        """Stop sending and leave the hub (the client is gone)."""
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
        if self.follower is not None:
            await self.follower.close()

    async def _refused(self, principal: Principal) -> bool:
        wait = await run_db(retry_after, principal.token) if principal.token else None
        if wait is not None:
            await self._fail(429, "Request was throttled.", "the token's rate limit is spent",
                             4429, retry_after=max(1, round(wait)))
            return True
        if get_hub().count(principal.key) >= settings.AIW_MAX_STREAMS_PER_CALLER:
            await self._fail(429, "Too many streams", "too many open streams for this caller",
                             4429)
            return True
        return False

    async def _fail(self, status: int, title: str, detail: str, code: int, **extra) -> None:
        await self.text(json.dumps(error_message(status, title, detail, **extra)))
        await self.close(code)

    async def text(self, data: str) -> None:
        """Send one text message."""
        await self.send({"type": "websocket.send", "text": data})

    async def close(self, code: int) -> None:
        """Close with ``code`` (before accept, the server refuses the handshake with 403)."""
        await self.send({"type": "websocket.close", "code": code})

    async def _pump(self) -> None:
        follower, send = self.follower, self.send
        try:
            while True:
                for batch in await follower.next_batch() or ():
                    for item in batch.items:
                        await send({"type": "websocket.send", "text": item.json})
        except SlowConsumer:
            await self.text(json.dumps(reconnect_message(follower.cursor, "slow_consumer")))
            await self.close(4408)
        except AccessRevoked as exc:
            await self._fail(401, "Access ended", str(exc), 4401)
        except Exception:  # never leave a socket open that no longer delivers
            log.exception("feed stream failed")
            await self.close(1011)
