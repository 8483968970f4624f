"""What SSE and WebSocket streams share: catch up from the database, then follow the hub.

A :class:`Follower` yields batches of events after a cursor with the same semantics as
``/diff`` (same scope, same filters, feed order, each event once):

1. it subscribes to the hub first, so every event newer than the hub's position is queued;
2. it reads pages from the database after the client's cursor until a short page;
3. it then serves the queue, skipping ids it already sent.

If the queue overflows while catching up, the follower simply catches up again from the
database. If it overflows while live (the client reads slower than events arrive), the
follower raises :class:`SlowConsumer` and the stream ends with a ``aiw.reconnect`` control
message carrying the cursor to resume from: nothing is ever dropped silently.
"""

from __future__ import annotations

import asyncio
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from aiw.authentication import Principal
from aiw.db import run_db
from aiw.feed import FeedItem, encode_cursor, read_events
from aiw.hub import Subscriber, get_hub
from aiw.problems import problem_body
from aiw.scope import FeedFilter, Scope, scope_for
from aiw.tokens import still_active

PAGE = 500


class SlowConsumer(Exception):
    """The client fell further behind than ``AIW_STREAM_QUEUE_MAX`` events."""


class AccessRevoked(Exception):
    """The stream's token was revoked or expired, or its user deactivated."""


def current_scope(principal: Principal) -> Scope | None:
    """The caller's Scope re-read from the database, or None if its access has ended."""
    if principal.token is not None and not still_active(principal.token.pk):
        return None
    user = get_user_model().objects.filter(pk=principal.user.pk, is_active=True).first()
    return scope_for(user) if user is not None else None


class Follower:
    """Delivers the feed after ``after_id`` to one stream (see the module docstring)."""

    def __init__(self, principal: Principal, where: FeedFilter, after_id: int) -> None:
        self.principal, self.where, self.last_id = principal, where, after_id
        self.catching_up = True
        self.subscriber: Subscriber | None = None
        self.refreshed = time.monotonic()
        self.flushed = 0.0

    @property
    def cursor(self) -> str:
        """Cursor of the last event delivered (the client resumes from it)."""
        return encode_cursor(self.last_id) if self.last_id else "0"

    async def start(self, scope: Scope) -> None:
        """Subscribe to the hub with the caller's ``scope``."""
        self.subscriber = Subscriber(scope, self.where, limit=settings.AIW_STREAM_QUEUE_MAX,
                                     key=self.principal.key)
        await get_hub().subscribe(self.subscriber)

    async def close(self) -> None:
        """Leave the hub (idempotent)."""
        if self.subscriber is not None:
            subscriber, self.subscriber = self.subscriber, None
            await get_hub().unsubscribe(subscriber)

    async def next_batch(self) -> list[FeedItem] | None:
        """The next events to send (possibly empty while catching up), or None when a
        heartbeat tick came first. Raises SlowConsumer or AccessRevoked."""
        if self.catching_up:
            return await self._catch_up()
        await self._refresh_scope()
        subscriber = self.subscriber
        await subscriber.wait()
        if len(subscriber.items) < subscriber.limit // 2:  # a burst goes out at once
            await self._pace()
        if subscriber.overflowed:
            raise SlowConsumer(self.cursor)
        items = [item for item in subscriber.take() if item.id > self.last_id]
        if items:
            self.last_id, self.flushed = items[-1].id, time.monotonic()
            return items
        return None

    async def _pace(self) -> None:
        """At most one write per ``AIW_STREAM_FLUSH_SECONDS``: events arriving meanwhile go
        out together. With hundreds of streams, one write (and one wake-up) per commit per
        stream is what saturates the event loop; this bounds it for a bounded delay."""
        wait = self.flushed + settings.AIW_STREAM_FLUSH_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _catch_up(self) -> list[FeedItem]:
        subscriber = self.subscriber
        page = await run_db(read_events, self.last_id, limit=PAGE, scope=subscriber.scope,
                            where=self.where)
        if page:
            self.last_id = page[-1].id
        if len(page) < PAGE:
            if subscriber.overflowed:
                subscriber.reset()  # the database has it all: catch up once more
            else:
                self.catching_up = False
        return page

    async def _refresh_scope(self) -> None:
        if time.monotonic() - self.refreshed < settings.AIW_SCOPE_REFRESH_SECONDS:
            return
        self.refreshed = time.monotonic()
        scope = await run_db(current_scope, self.principal)
        if scope is None:
            raise AccessRevoked("the token was revoked or has expired")
        self.subscriber.scope = scope


def reconnect_message(cursor: str, reason: str) -> dict:
    """stream-control.v1 ``aiw.reconnect``: resume from ``cursor`` (``/subscribe?since=``)."""
    return {"type": "aiw.reconnect", "reason": reason, "cursor": cursor,
            "resume": f"{reverse('aiw-subscribe')}?since={cursor}"}


def error_message(status: int, title: str, detail: str, **extra) -> dict:
    """stream-control.v1 ``aiw.error``: a problem that ends the stream."""
    return {"type": "aiw.error", "problem": problem_body(status, title, detail, **extra)}
