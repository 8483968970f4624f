"""The in-process hub and the scope/filter rules it shares with /diff."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from aiw.feed import listen_for_commits, read_events
from aiw.hub import FeedHub, Subscriber
from aiw.tests.conftest import touch
from twins.feed_scope import FeedFilter, Scope
from twins.ledger import record_change
from twins.models import Twin


def _twinless(n: int = 1) -> list[int]:
    ids = []
    for _ in range(n):
        with transaction.atomic():
            ids.append(record_change(actor="test", action="note", resource_type="note",
                                     resource_id="1", operation="created", after={"n": 1}).id)
    return ids


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_each_event_reaches_each_interested_subscriber_once(twin):
    other = await sync_to_async(Twin.objects.create)(slug="elsewhere", name="Elsewhere")
    hub, everyone = FeedHub(), Scope(all_twins=True, every_twinless=True)
    every = Subscriber(everyone, FeedFilter(), limit=100)
    plant = Subscriber(everyone, FeedFilter(twin="plant"), limit=100)
    narrow = Subscriber(Scope(all_twins=False, twin_ids=frozenset({other.pk})), FeedFilter(),
                        limit=100)
    for subscriber in (every, plant, narrow):
        hub.register(subscriber)
    mine = await sync_to_async(touch)(twin)
    theirs = await sync_to_async(touch)(other)
    none = await sync_to_async(_twinless)()
    assert await hub.fan_out() == 3
    assert [i.id for i in every.take()] == mine + theirs + none
    assert [i.id for i in plant.take()] == mine
    assert [i.id for i in narrow.take()] == theirs  # a twin-less event: its actor's only


def test_a_full_queue_marks_an_overflow_instead_of_dropping_silently():
    subscriber = Subscriber(Scope(all_twins=True), FeedFilter(), limit=2)

    class Item:
        type, resource_type, twin_id, twin = "twin.updated", "twin", 1, "plant"

        def __init__(self, n: int) -> None:
            self.id = n

    for n in range(3):
        subscriber.offer(Item(n))
    assert subscriber.overflowed and subscriber.overflow.is_set()
    assert subscriber.take() == []
    subscriber.reset()
    subscriber.offer(Item(9))
    assert not subscriber.overflowed and [i.id for i in subscriber.take()] == [9]


@pytest.mark.django_db
def test_scope_and_filters_select_the_same_events_in_sql_and_in_memory(twin):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    touch(twin, 2)
    touch(other)
    _twinless()
    everything = read_events(0, limit=100)
    scopes = [Scope(all_twins=True), Scope(all_twins=True, every_twinless=True),
              Scope(all_twins=False), Scope(all_twins=False, every_twinless=True),
              Scope(all_twins=False, twin_ids=frozenset({twin.pk})),
              Scope(all_twins=False, twin_ids=frozenset({twin.pk}), actor="test"),
              Scope(all_twins=False, actor="someone-else")]
    filters = [FeedFilter(), FeedFilter(twin="plant"), FeedFilter(types=frozenset({"note"})),
               FeedFilter(types=frozenset({"twin.updated"}), twin="elsewhere")]
    for scope, where in itertools.product(scopes, filters):
        in_sql = [i.id for i in read_events(0, limit=100, scope=scope, where=where)]
        in_memory = [i.id for i in everything if scope.allows(i) and where.matches(i)]
        assert in_sql == in_memory, (scope, where)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_commit_reaches_a_listening_hub_as_a_postgresql_notification(twin):
    """GIVEN a listener on the feed's PostgreSQL channel (as each hub keeps one)
    WHEN a change commits through record_change
    THEN the listener hears its event id: the hub learns of commits from PostgreSQL itself,
    which queues a notification for every listener instead of dropping it when busy."""
    listener = listen_for_commits()
    assert await anext(listener) is None  # listening: read what came before
    try:
        (event_id,) = await sync_to_async(touch)(twin)
        heard = await asyncio.wait_for(anext(listener), 30)  # a bound, not a speed check
    finally:
        await listener.aclose()
    assert heard == event_id
