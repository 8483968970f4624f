"""WebSocket stream of the change feed (``/ws/feed?since=<cursor>&types=&twin=``).

Same events, filters, resume and limits as ``GET /subscribe`` (both use
``aiw.streams.Follower``): each text frame is one change-event.v1 object whose ``cursor``
resumes after it; a stream-control.v1 object (``type`` ``aiw.reconnect`` or ``aiw.error``)
precedes a close by the server. Authentication: a session cookie (with an allowed Origin) or
``Authorization: Bearer <token>`` in the handshake.

Close codes: 4401 not authenticated, 4403 token lacks the read scope, 4410 cursor expired or
unknown (resync from ``/snapshot``), 4429 too many streams or rate limit, 4408 too slow
(resume from the cursor in the preceding ``aiw.reconnect``). A client that reads nothing at
all may miss that goodbye (the server gives up on a closing handshake it gets no answer to);
it resumes from the last event it did receive, which is the same cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from aiw.authentication import Principal
from aiw.db import run_db
from aiw.feed import decode_cursor
from aiw.hub import get_hub
from aiw.streams import AccessRevoked, Follower, SlowConsumer, error_message, reconnect_message
from aiw.throttling import retry_after
from twins.feed import InvalidCursor
from twins.feed_scope import FeedFilter, scope_for

log = logging.getLogger(__name__)
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")


def _open(cursor: str, user):
    return decode_cursor(cursor), scope_for(user)


class FeedConsumer(AsyncWebsocketConsumer):
    """Follows the change feed for one authenticated caller."""

    # No channel-layer channel per socket: the process's hub listens once for all of them.
    channel_layer_alias = None

    follower: Follower | None = None
    pump: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4000 + self.scope.get("auth_status", 401))
            return
        principal = Principal(user, self.scope.get("agent_token"))
        query = {k: v[0] for k, v in parse_qs(self.scope.get("query_string", b"").decode()).items()}
        await self.accept()
        if await self._refused(principal):
            return
        twin = query.get("twin") or None
        if twin is not None and not SLUG.match(twin):
            await self._fail(400, "Invalid twin", "twin must be a slug", 4400)
            return
        try:
            after, scope = await run_db(_open, query.get("since", "0"), user)
        except InvalidCursor as exc:
            await self._fail(410, "Cursor expired or unknown", str(exc), 4410,
                             reason=exc.reason, resync="/snapshot")
            return
        self.follower = Follower(principal, FeedFilter.parse(query.get("types"), twin), after)
        await self.follower.start(scope)
        self.pump = asyncio.create_task(self._pump())

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
        await self.send(text_data=json.dumps(error_message(status, title, detail, **extra)))
        await self.close(code=code)

    async def _pump(self) -> None:
        follower = self.follower
        try:
            while True:
                batch = await follower.next_batch()
                for item in (item for part in batch or () for item in part.items):
                    await self.send(text_data=item.json)
        except SlowConsumer:
            message = reconnect_message(follower.cursor, "slow_consumer")
            await self.send(text_data=json.dumps(message))
            await self.close(code=4408)
        except AccessRevoked as exc:
            await self._fail(401, "Access ended", str(exc), 4401)
        except Exception:  # never leave a socket open that no longer delivers
            log.exception("feed stream failed")
            await self.close(code=1011)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Clients have nothing to say; frames they send are ignored."""

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
        if self.follower is not None:
            await self.follower.close()
