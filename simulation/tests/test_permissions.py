"""Who may run, read and cancel simulations, where: role × action × twin in or out of scope.

Each role user is granted one twin ("plant") object by object; "other" is outside their scope
(the admin role acts on every twin). Statuses are literal columns. Decisions come from
``twins.scoping.may`` (``simulation.services.common``): reading needs the run's twin visible
(404 otherwise), running and cancelling need ``simulation.add_simulationrun`` and operate
rights on the twin.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from simulation.tests.factories import linear_request, stored_run
from tests.fixtures import grant_only
from twins.choices import AssetKind
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db
ROLES = ["viewer", "agent", "executor", "supervisor", "admin", "outsider"]

#: role, action, status on a twin in the caller's scope, status on a twin outside it
TABLE = [
    ("viewer", "run", 403, 404),
    ("viewer", "read", 200, 404),
    ("viewer", "cancel", 403, 404),
    ("agent", "run", 200, 404),
    ("agent", "read", 200, 404),
    ("agent", "cancel", 200, 404),
    ("executor", "run", 403, 404),
    ("executor", "read", 200, 404),
    ("executor", "cancel", 403, 404),
    ("supervisor", "run", 200, 404),
    ("supervisor", "read", 200, 404),
    ("supervisor", "cancel", 200, 404),
    ("admin", "run", 200, 200),
    ("admin", "read", 200, 200),
    ("admin", "cancel", 200, 200),
    ("outsider", "run", 404, 404),  # no twin is in an outsider's scope
    ("outsider", "read", 404, 404),
    ("outsider", "cancel", 404, 404),
]


@pytest.fixture
def world(users):
    twins = {"in": Twin.objects.create(slug="plant", name="Plant"),
             "out": Twin.objects.create(slug="other", name="Other")}
    for twin in twins.values():
        Asset.objects.create(twin=twin, slug="pump-1", name="Pump", kind=AssetKind.GENERIC,
                             metrics=[{"name": "flow"}])
    grant_only(users, twins["in"])
    return twins


def act(client: Client, action: str, twin: Twin) -> int:
    if action == "run":
        body = linear_request(asset=f"{twin.slug}/pump-1")
        return client.post("/sim/run", json.dumps(body),
                           content_type="application/json").status_code
    run = stored_run(twin.assets.get())
    if action == "read":
        return client.get(f"/sim/runs/{run.pk}").status_code
    return client.post(f"/sim/runs/{run.pk}/cancel").status_code


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize(("role", "action", "in_scope", "out_of_scope"), TABLE)
def test_role_action_twin_matrix(world, users, role, action, in_scope, out_of_scope, scope):
    client = Client()
    client.force_login(users[role])
    assert act(client, action, world[scope]) == (in_scope if scope == "in" else out_of_scope)


def test_the_table_covers_every_role_and_action():
    assert {(r, a) for r, a, *_ in TABLE} == {
        (r, a) for r in ROLES for a in ("run", "read", "cancel")}
