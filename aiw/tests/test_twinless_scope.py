"""Events without a twin reach their actor and admins only: on /diff, SSE and WebSocket alike
(the streams share ``twins.feed_scope.Scope.allows`` with /diff's SQL, proved in test_hub)."""

from __future__ import annotations

import pytest
from django.db import transaction

from aiw.tests.conftest import touch
from twins.ledger import record_change

pytestmark = pytest.mark.django_db


def _twinless_run(actor) -> int:
    """A change without a twin, as a simulation run made without an asset writes it."""
    with transaction.atomic():
        return record_change(actor=actor, action="simulation.created",
                             resource_type="simulation_run", resource_id="7",
                             operation="created",
                             after={"inputs": {"secret": 1}, "result": {"p50": 2}}).id


# (role reading /diff, whose twin-less event, may see it)
TABLE = [
    ("viewer", "own", True),
    ("viewer", "other", False),
    ("agent", "own", True),
    ("agent", "other", False),
    ("executor", "other", False),
    ("supervisor", "own", True),
    ("supervisor", "other", False),
    ("admin", "other", True),
    ("outsider", "own", True),
    ("outsider", "other", False),
]


@pytest.mark.parametrize(("role", "whose", "visible"), TABLE)
def test_a_twinless_event_is_seen_by_its_actor_and_admins_only(
    role, whose, visible, users, client, twin
):
    reader = users[role]
    author = reader if whose == "own" else users["supervisor" if role != "supervisor" else "agent"]
    event_id = _twinless_run(author)
    client.force_login(reader)
    ids = {e["id"] for e in client.get("/diff", {"since": "0"}).json()["events"]}
    assert (event_id in ids) is visible


def test_events_of_a_visible_twin_are_still_seen_beside_hidden_twinless_ones(
    users, client, twin
):
    mine = touch(twin)
    _twinless_run(users["supervisor"])
    client.force_login(users["viewer"])
    body = client.get("/diff", {"since": "0"}).json()
    assert [e["id"] for e in body["events"]] == mine
