"""Who may do what with telemetry, where: role × action × twin in or out of the caller's scope.

Each role user is granted one twin ("plant") object by object; "elsewhere" is outside their
scope (the admin role acts on every twin). Statuses are literal columns. Every decision comes
from ``twins.scoping.may`` / ``twins_where``: a twin out of scope reads as not existing (404),
ingest rejects its events as unknown assets (400 with the events named), and acknowledging an
anomaly, which silences its escalation, needs ``telemetry.acknowledge_anomaly`` AND operate
rights on the anomaly's own twin.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client, TestCase

from telemetry.choices import AnomalyStatus
from telemetry.models import Anomaly
from tests.fixtures import T0, event, grant_only
from twins.choices import AssetKind
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db
ROLES = ["viewer", "agent", "executor", "supervisor", "admin", "outsider"]

#: role, action, outcome on a twin in the caller's scope, outcome on a twin outside it.
#: Outcomes are HTTP statuses; for the dashboard's acknowledge (a redirect either way) they
#: are "acknowledged" or "refused", or 404.
TABLE = [
    ("viewer", "ingest", 403, 403),
    ("viewer", "latest", 200, 404),
    ("viewer", "acknowledge", "refused", 404),
    ("agent", "ingest", 201, 400),
    ("agent", "latest", 200, 404),
    ("agent", "acknowledge", "refused", 404),
    ("executor", "ingest", 403, 403),
    ("executor", "latest", 200, 404),
    ("executor", "acknowledge", "refused", 404),
    ("supervisor", "ingest", 403, 403),
    ("supervisor", "latest", 200, 404),
    ("supervisor", "acknowledge", "acknowledged", 404),
    ("admin", "ingest", 201, 201),
    ("admin", "latest", 200, 200),
    ("admin", "acknowledge", "acknowledged", "acknowledged"),
    ("outsider", "ingest", 403, 403),
    ("outsider", "latest", 404, 404),
    ("outsider", "acknowledge", 404, 404),
]


@pytest.fixture
def world(users):
    twins = {"in": Twin.objects.create(slug="plant", name="Plant"),
             "out": Twin.objects.create(slug="elsewhere", name="Elsewhere")}
    for twin in twins.values():
        pump = Asset.objects.create(twin=twin, slug="pump-1", name="Pump", kind=AssetKind.PUMP,
                                    metrics=[{"name": "Pressure"}])
        Anomaly.objects.create(asset=pump, metric="Pressure", detector="ewma", kind="drift",
                               severity="critical", score=1.0, started_at=T0, last_seen_at=T0,
                               features={})
    grant_only(users, twins["in"])
    return twins


def act(client: Client, action: str, twin: Twin):
    if action == "ingest":
        body = event(twin.assets.get(), T0, {"Pressure": 1.0})
        return client.post("/telemetry/ingest", json.dumps(body),
                           content_type="application/json").status_code
    if action == "latest":
        return client.get("/telemetry/latest", {"twin": twin.slug, "asset": "pump-1"}
                          ).status_code
    anomaly = Anomaly.objects.get(asset__twin=twin)
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(f"/telemetry/anomalies/{anomaly.pk}/acknowledge",
                               {"comment": "seen, crew on the way"})
    if response.status_code != 302:
        return response.status_code
    anomaly.refresh_from_db()
    return "acknowledged" if anomaly.status == AnomalyStatus.ACKNOWLEDGED else "refused"


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize(("role", "action", "in_scope", "out_of_scope"), TABLE)
def test_role_action_twin_matrix(world, users, role, action, in_scope, out_of_scope, scope):
    client = Client()
    client.force_login(users[role])
    assert act(client, action, world[scope]) == (in_scope if scope == "in" else out_of_scope)


def test_the_table_covers_every_role_and_action():
    assert {(r, a) for r, a, *_ in TABLE} == {
        (r, a) for r in ROLES for a in ("ingest", "latest", "acknowledge")}
