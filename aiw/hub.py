"""One fan-out hub per process: read each committed event once, hand it to every local stream.

The hub joins the channel-layer group ``aiw.feed`` once (one Redis subscription per process,
not one per subscriber). A ``feed.committed`` notification, or a poll every
``AIW_HUB_POLL_SECONDS`` in case a notification was lost or came from a process without a
channel layer, makes it read the events after the last one it read, in id order, with one
query, and offer each to every local :class:`Subscriber`. Subscribers filter in memory (their
Scope and FeedFilter) into a bounded queue; a full queue marks the subscriber ``overflowed``
(its stream then tells the client to resume from its cursor) instead of dropping silently.

Guarantee: after ``subscribe()`` returns, the subscriber is offered every event with an id
above ``last_id`` at that moment, in order (ids become visible in commit order; see
``twins.ledger.record_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter, deque

from channels.layers import get_channel_layer
from django.conf import settings

from aiw.db import run_db
from aiw.feed import FEED_GROUP, FeedItem, newest_event_id, read_events
from twins.feed_scope import FeedFilter, Scope

log = logging.getLogger(__name__)
READ_BATCH = 1000
GROUP_REFRESH_SECONDS = 3600.0


def batch_size() -> int:
    """Events per hub read: at most half a stream queue, so one burst (a transaction that
    commits thousands of events) never overflows the queue of a client that keeps up; the
    database round trip between batches lets every stream drain."""
    return max(1, min(READ_BATCH, settings.AIW_STREAM_QUEUE_MAX // 2))


class Subscriber:
    """A local stream's view of the hub: a bounded queue of the events it may and wants to see.

    ``limit`` is the queue bound in events (``AIW_STREAM_QUEUE_MAX``). ``key`` identifies the
    caller for the per-caller stream limit. A stream awaits :meth:`wait`, which returns when
    events are queued, the queue overflowed, or the hub's heartbeat tick poked it. (One bare
    future per wait: ``asyncio.wait_for`` would cost a task and a timer per wake-up, which
    dominated the event loop with hundreds of streams.)
    """

    def __init__(self, scope: Scope, where: FeedFilter, *, limit: int, key: str = "") -> None:
        self.scope, self.where, self.limit, self.key = scope, where, limit, key
        self.items: deque[FeedItem] = deque()
        self.overflowed = False
        self.overflow = asyncio.Event()
        self._waiter: asyncio.Future | None = None

    def offer(self, item: FeedItem) -> None:
        """Queue ``item`` if visible and wanted; on a full queue, mark overflow and stop."""
        if self.overflowed or not (self.scope.allows(item) and self.where.matches(item)):
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.items.clear()
            self.overflow.set()
        else:
            self.items.append(item)
        self.poke()

    def poke(self) -> None:
        """Wake the stream if it is waiting (new events, overflow or a heartbeat tick)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return at once if anything is queued or overflowed, else at the next poke."""
        if self.items or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> list[FeedItem]:
        """Everything queued, oldest first; clears the queue."""
        items = list(self.items)
        self.items.clear()
        return items

    def reset(self) -> None:
        """Forget an overflow (used while catching up from the database)."""
        self.items.clear()
        self.overflowed = False
        self.overflow.clear()


class FeedHub:
    """The per-process (per event loop) fan-out of the change feed."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Subscribers by their twin filter (None: every twin), so an event is offered only to
        # the streams that may want it: O(interested), not O(all), per event.
        self.by_twin: dict[str | None, set[Subscriber]] = {}
        self.last_id = 0
        self.dirty = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self._starting: asyncio.Lock = asyncio.Lock()

    def count(self, key: str) -> int:
        """How many local streams ``key`` (a caller) has open."""
        return Counter(s.key for s in self.subscribers)[key]

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Start offering new events to ``subscriber`` (starts the hub if idle)."""
        async with self._starting:
            if not self.tasks:
                self.last_id = await run_db(newest_event_id)
                self.tasks = [asyncio.create_task(self._listen()),
                              asyncio.create_task(self._pump()),
                              asyncio.create_task(self._tick())]
            self.register(subscriber)

    def register(self, subscriber: Subscriber) -> None:
        """Add ``subscriber`` without starting the hub (for callers that drive fan_out)."""
        self.subscribers.add(subscriber)
        self.by_twin.setdefault(subscriber.where.twin, set()).add(subscriber)

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop offering to ``subscriber``; stops the hub when none is left."""
        self.subscribers.discard(subscriber)
        group = self.by_twin.get(subscriber.where.twin, set())
        group.discard(subscriber)
        if not group:
            self.by_twin.pop(subscriber.where.twin, None)
        if not self.subscribers and self.tasks:
            tasks, self.tasks = self.tasks, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _tick(self) -> None:
        """Poke every stream once per heartbeat interval (idle ones then send a heartbeat)."""
        while True:
            await asyncio.sleep(settings.AIW_SSE_HEARTBEAT_SECONDS)
            for subscriber in list(self.subscribers):
                subscriber.poke()

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), settings.AIW_HUB_POLL_SECONDS)
            self.dirty.clear()
            try:
                await self.fan_out()
            except Exception:  # keep serving; the next poll retries from last_id
                log.exception("feed hub read failed")
                await asyncio.sleep(1.0)

    async def fan_out(self) -> int:
        """Read every event after ``last_id`` and offer each to every subscriber; returns how
        many events were read."""
        total, batch = 0, batch_size()
        while True:
            items = await run_db(read_events, self.last_id, limit=batch)
            everywhere = tuple(self.by_twin.get(None, ()))
            for item in items:
                targeted = self.by_twin.get(item.twin, ()) if item.twin is not None else ()
                for subscriber in (*targeted, *everywhere):
                    subscriber.offer(item)
            if items:
                self.last_id = items[-1].id
            total += len(items)
            if len(items) < batch:
                return total

    async def _listen(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        while True:
            try:
                await self._receive_notifications(layer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: polling still delivers; retry later
                log.warning("feed hub lost the channel layer (%r); polling until it is back",
                            exc)
                await asyncio.sleep(2.0)

    async def _receive_notifications(self, layer) -> None:
        channel = await layer.new_channel()
        await layer.group_add(FEED_GROUP, channel)
        joined = time.monotonic()
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("id", 0) > self.last_id:
                    self.dirty.set()
                if time.monotonic() - joined > GROUP_REFRESH_SECONDS:
                    await layer.group_add(FEED_GROUP, channel)
                    joined = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(layer.group_discard(FEED_GROUP, channel))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeedHub] = weakref.WeakKeyDictionary()


def get_hub() -> FeedHub:
    """The hub of the running event loop (one per process under daphne)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = FeedHub()
    return hub
