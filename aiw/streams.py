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

from django.conf import settings
from django.urls import reverse

from aiw.authentication import Principal
from aiw.db import run_db
from aiw.feed import FeedItem, read_events
from aiw.hub import Batch, Subscriber, get_hub
from twins.feed import encode_cursor
from twins.feed_scope import FeedFilter, Scope
from twins.problems import problem_body

PAGE = 500


class SlowConsumer(Exception):
    """The client fell further behind than ``AIW_STREAM_QUEUE_MAX`` events."""


class AccessRevoked(Exception):
    """The stream's token was revoked or expired, or its user deactivated."""


class Follower:
    """Delivers the feed after ``after_id`` to one stream (see the module docstring)."""

    def __init__(self, principal: Principal, where: FeedFilter, after_id: int) -> None:
        self.principal, self.where, self.last_id = principal, where, after_id
        self.catching_up = True
        self.subscriber: Subscriber | None = None

    @property
    def cursor(self) -> str:
        """Cursor of the last event delivered (the client resumes from it)."""
        return encode_cursor(self.last_id) if self.last_id else "0"

    async def start(self, scope: Scope) -> None:
        """Subscribe to the hub with the caller's ``scope``."""
        self.subscriber = Subscriber(scope, self.where, limit=settings.AIW_STREAM_QUEUE_MAX,
                                     principal=self.principal)
        await get_hub().subscribe(self.subscriber)

    async def close(self) -> None:
        """Leave the hub (idempotent)."""
        if self.subscriber is not None:
            subscriber, self.subscriber = self.subscriber, None
            await get_hub().unsubscribe(subscriber)

    async def next_batch(self) -> list[Batch] | None:
        """The next events to send as batches (possibly none while catching up), or None when
        a heartbeat tick came first. Raises SlowConsumer or AccessRevoked."""
        if self.catching_up:
            page = await self._catch_up()
            return [Batch(tuple(page))] if page else []
        subscriber = self.subscriber
        await subscriber.wait()
        if subscriber.revoked:
            raise AccessRevoked("the token was revoked or has expired")
        if subscriber.overflowed:
            raise SlowConsumer(self.cursor)
        batches = []
        for queued in subscriber.take_batches():
            batch = queued.after(self.last_id)  # the hub may repeat what catch-up read
            if batch is not None:
                batches.append(batch)
                self.last_id = batch.items[-1].id
        return batches or None

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


def reconnect_message(cursor: str, reason: str) -> dict:
    """stream-control.v1 ``aiw.reconnect``: resume from ``cursor`` (``/subscribe?since=``)."""
    return {"type": "aiw.reconnect", "reason": reason, "cursor": cursor,
            "resume": f"{reverse('aiw-subscribe')}?since={cursor}"}


def error_message(status: int, title: str, detail: str, **extra) -> dict:
    """stream-control.v1 ``aiw.error``: a problem that ends the stream."""
    return {"type": "aiw.error", "problem": problem_body(status, title, detail, **extra)}
