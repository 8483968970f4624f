"""One fan-out hub per process: read each committed event once, hand it to every local stream.

The hub listens once per process for the feed's PostgreSQL notification (``aiw.feed``:
``LISTEN``, see :func:`aiw.feed.listen_for_commits`), or polls every ``AIW_HUB_POLL_SECONDS``
in case a notification was lost (a writer that crashed between its commit and its notify) or
the listening connection is down. Either makes it read the events after the last one it read,
in id order, with one query on its own async connection (on the event loop: no thread, no
wait for the GIL per step), at most once per ``AIW_STREAM_FLUSH_SECONDS`` (events committed
meanwhile go out together: one wake-up per stream per read, not per event).

Fan-out works on groups, not subscribers: streams with the same scope and filter form one
group, which filters the read events once into a :class:`Batch` whose SSE frames are joined
once; every member queues that same object (no per-subscriber filtering, encoding or copying).
A full queue marks the subscriber ``overflowed`` (its stream then tells the client to resume
from its cursor) instead of dropping silently. Access is re-checked once per caller (token or
user) every ``AIW_SCOPE_REFRESH_SECONDS``, not once per stream.

Guarantee: after ``subscribe()`` returns, the subscriber is offered every event with an id
above ``last_id`` at that moment, in order (ids become visible in commit order; see
``twins.ledger.record_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter, deque
from collections.abc import Iterable
from functools import cached_property

from django.conf import settings
from django.contrib.auth import get_user_model

from aiw.authentication import Principal
from aiw.db import run_db
from aiw.feed import FeedItem, connect_async, listen_for_commits, read_events_async
from aiw.tokens import still_active
from twins.feed import newest_event_id
from twins.feed_scope import FeedFilter, Scope, scope_for

log = logging.getLogger(__name__)
READ_BATCH = 1000
GroupKey = tuple[Scope, FeedFilter]


def batch_size() -> int:
    """Events per hub read: at most half a stream queue, so one burst (a transaction that
    commits thousands of events) never overflows the queue of a client that keeps up; the
    database round trip between batches lets every stream drain."""
    return max(1, min(READ_BATCH, settings.AIW_STREAM_QUEUE_MAX // 2))


def current_scope(principal: Principal) -> Scope | None:
    """The caller's Scope re-read from the database, or None if its access has ended."""
    if principal.token is not None and not still_active(principal.token.pk):
        return None
    user = get_user_model().objects.filter(pk=principal.user.pk, is_active=True).first()
    return scope_for(user) if user is not None else None


class Batch:
    """Consecutive events (feed order) that one group of streams gets from one hub read.

    ``items`` are :class:`aiw.feed.FeedItem`; :attr:`sse` is their SSE frames joined once and
    shared by every stream of the group.
    """

    def __init__(self, items: tuple[FeedItem, ...]) -> None:
        self.items = items

    @cached_property
    def sse(self) -> bytes:
        """Every event's SSE frame, concatenated."""
        return b"".join(item.sse for item in self.items)

    def after(self, event_id: int) -> Batch | None:
        """This batch without the events up to ``event_id`` (None if nothing is left)."""
        if self.items[0].id > event_id:
            return self
        rest = tuple(item for item in self.items if item.id > event_id)
        return Batch(rest) if rest else None


class Subscriber:
    """A local stream's view of the hub: a bounded queue of the events it may and wants to see.

    ``limit`` is the queue bound in events (``AIW_STREAM_QUEUE_MAX``). ``principal`` (its
    ``key``) identifies the caller for the per-caller stream limit and the access re-check;
    ``revoked`` is set when that re-check finds the access ended. A stream awaits
    :meth:`wait`, which returns when events are queued, the queue overflowed, access ended or
    the hub's heartbeat tick poked it. (One bare future per wait: ``asyncio.wait_for`` would
    cost a task and a timer per wake-up.)
    """

    def __init__(self, scope: Scope, where: FeedFilter, *, limit: int, key: str = "",
                 principal: Principal | None = None) -> None:
        self.scope, self.where, self.limit = scope, where, limit
        self.principal = principal
        self.key = principal.key if principal is not None else key
        self.batches: deque[Batch] = deque()
        self.queued = 0  # events in ``batches``
        self.overflowed = self.revoked = False
        self.overflow = asyncio.Event()
        self._waiter: asyncio.Future | None = None

    @property
    def group(self) -> GroupKey:
        """Streams with equal (scope, filter) share every batch."""
        return self.scope, self.where

    def offer(self, item: FeedItem) -> None:
        """Queue ``item`` if visible and wanted (one event; the hub offers batches)."""
        if self.scope.allows(item) and self.where.matches(item):
            self.offer_batch(Batch((item,)))

    def offer_batch(self, batch: Batch) -> None:
        """Queue ``batch`` (already filtered); on a full queue, mark overflow and stop."""
        if self.overflowed:
            return
        if self.queued + len(batch.items) > self.limit:
            self.overflowed = True
            self.batches.clear()
            self.queued = 0
            self.overflow.set()
        else:
            self.batches.append(batch)
            self.queued += len(batch.items)
        self.poke()

    def revoke(self) -> None:
        """Mark the caller's access as ended and wake the stream."""
        self.revoked = True
        self.poke()

    def poke(self) -> None:
        """Wake the stream if it is waiting (new events, overflow or a heartbeat tick)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return at once if anything is queued, overflowed or revoked, else at the next
        poke."""
        if self.batches or self.overflowed or self.revoked:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take_batches(self) -> list[Batch]:
        """Everything queued, oldest first; clears the queue."""
        batches = list(self.batches)
        self.batches.clear()
        self.queued = 0
        return batches

    def take(self) -> list[FeedItem]:
        """Every queued event, oldest first; clears the queue."""
        return [item for batch in self.take_batches() for item in batch.items]

    def reset(self) -> None:
        """Forget an overflow (used while catching up from the database)."""
        self.batches.clear()
        self.queued = 0
        self.overflowed = False
        self.overflow.clear()


class FeedHub:
    """The per-process (per event loop) fan-out of the change feed."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Groups by their twin filter (None: every twin), so an event is filtered only for
        # the groups that may want it: O(interested groups), not O(streams), per event.
        self.groups: dict[str | None, dict[GroupKey, set[Subscriber]]] = {}
        self.last_id = 0
        self.dirty = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self._starting: asyncio.Lock = asyncio.Lock()
        self._reader = None  # the hub's own async connection for its reads

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
                              asyncio.create_task(self._tick()),
                              asyncio.create_task(self._refresh())]
            self.register(subscriber)

    def register(self, subscriber: Subscriber) -> None:
        """Add ``subscriber`` without starting the hub (for callers that drive fan_out)."""
        self.subscribers.add(subscriber)
        by_key = self.groups.setdefault(subscriber.where.twin, {})
        by_key.setdefault(subscriber.group, set()).add(subscriber)

    def _unregister(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        by_key = self.groups.get(subscriber.where.twin, {})
        members = by_key.get(subscriber.group, set())
        members.discard(subscriber)
        if not members:
            by_key.pop(subscriber.group, None)
        if not by_key:
            self.groups.pop(subscriber.where.twin, None)

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop offering to ``subscriber``; stops the hub when none is left."""
        self._unregister(subscriber)
        if not self.subscribers and self.tasks:
            tasks, self.tasks = self.tasks, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            reader, self._reader = self._reader, None
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader.close()

    async def _tick(self) -> None:
        """Poke every stream once per heartbeat interval (idle ones then send a heartbeat)."""
        while True:
            await asyncio.sleep(settings.AIW_SSE_HEARTBEAT_SECONDS)
            for subscriber in list(self.subscribers):
                subscriber.poke()

    async def _refresh(self) -> None:
        """Re-check each caller's access once per ``AIW_SCOPE_REFRESH_SECONDS`` (one query
        set per caller, however many streams it has open)."""
        while True:
            await asyncio.sleep(settings.AIW_SCOPE_REFRESH_SECONDS)
            callers: dict[str, list[Subscriber]] = {}
            for subscriber in self.subscribers:
                if subscriber.principal is not None:
                    callers.setdefault(subscriber.key, []).append(subscriber)
            for streams in callers.values():
                try:
                    scope = await run_db(current_scope, streams[0].principal)
                except Exception:  # the database is away: keep the old scope, retry later
                    log.exception("could not re-check a stream caller's access")
                    continue
                self._rescope(streams, scope)

    def _rescope(self, streams: Iterable[Subscriber], scope: Scope | None) -> None:
        for subscriber in streams:
            if subscriber not in self.subscribers:
                continue
            if scope is None:
                subscriber.revoke()
            elif scope != subscriber.scope:
                self._unregister(subscriber)
                subscriber.scope = scope
                self.register(subscriber)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), settings.AIW_HUB_POLL_SECONDS)
            self.dirty.clear()
            started = loop.time()
            try:
                await self.fan_out()
            except Exception:  # keep serving; the next poll retries from last_id
                log.exception("feed hub read failed")
                await asyncio.sleep(1.0)
            rest = settings.AIW_STREAM_FLUSH_SECONDS - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    async def fan_out(self) -> int:
        """Read every event after ``last_id`` and offer each group its batch; returns how
        many events were read."""
        total, size = 0, batch_size()
        while True:
            items = await self._read(size)
            if items:
                self.deliver(items)
                self.last_id = items[-1].id
            total += len(items)
            if len(items) < size:
                return total

    async def _read(self, size: int) -> list[FeedItem]:
        """The next ``size`` events after ``last_id`` on the hub's own connection (opened on
        first use; dropped on any error, so the next read reconnects)."""
        if self._reader is None or self._reader.closed:
            self._reader = await connect_async()
        try:
            return await read_events_async(self._reader, self.last_id, limit=size)
        except BaseException:
            reader, self._reader = self._reader, None
            with contextlib.suppress(Exception):
                await reader.close()
            raise

    def deliver(self, items: list[FeedItem]) -> None:
        """Offer ``items`` (feed order) to every group that may and wants to see them."""
        by_twin: dict[str | None, list[FeedItem]] = {}
        for item in items:
            by_twin.setdefault(item.twin, []).append(item)
        for twin, groups in list(self.groups.items()):
            candidates = items if twin is None else by_twin.get(twin)
            if not candidates:
                continue
            for (scope, where), members in list(groups.items()):
                mine = tuple(i for i in candidates if scope.allows(i) and where.matches(i))
                if mine:
                    batch = Batch(mine)
                    for subscriber in members:
                        subscriber.offer_batch(batch)

    async def _listen(self) -> None:
        while True:
            try:
                async for event_id in listen_for_commits():
                    if event_id is None or event_id > self.last_id:
                        self.dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: polling still delivers; retry later
                log.warning("feed hub lost its notification connection (%r); polling until "
                            "it is back", exc)
            await asyncio.sleep(2.0)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeedHub] = weakref.WeakKeyDictionary()


def get_hub() -> FeedHub:
    """The hub of the running event loop (one per web process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = FeedHub()
    return hub
