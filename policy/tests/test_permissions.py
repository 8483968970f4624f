"""Who may do what, where: role × endpoint × twin (in the caller's scope or not).

Each role user is granted one twin ("plant", in scope) object by object, the way an admin
does it on the twin's "Object permissions" page; "elsewhere" is out of their scope. The admin
role acts on every twin. Out-of-scope objects are 404, never 403.
"""

from __future__ import annotations

import pytest
from django.test import Client

from policy.choices import ProposalStatus
from policy.tests import factories
from policy.transitions import VERBS, allowed_verbs
from tests.fixtures import grant_only
from twins.choices import AssetKind
from twins.models import Asset, Twin
from twins.roles import grant_twin

pytestmark = pytest.mark.django_db
ROLES = ["viewer", "agent", "executor", "supervisor", "admin", "outsider"]

#: endpoint: (method, path, status the proposal needs, body)
ENDPOINTS = {
    "list": ("get", "/proposals", ProposalStatus.PENDING_APPROVAL, None),
    "detail": ("get", "/proposals/{id}", ProposalStatus.PENDING_APPROVAL, None),
    "page": ("get", "/dashboard/proposals/{id}/", ProposalStatus.PENDING_APPROVAL, None),
    "approve": ("post", "/proposals/{id}/approve", ProposalStatus.PENDING_APPROVAL, {}),
    "reject": ("post", "/proposals/{id}/reject", ProposalStatus.PENDING_APPROVAL,
               {"reason": "not now"}),
    "execute": ("post", "/proposals/{id}/execute", ProposalStatus.APPROVED, {}),
    "rollback": ("post", "/proposals/{id}/rollback", ProposalStatus.VERIFIED,
                 {"reason": "undo it"}),
    "resimulate": ("post", "/proposals/{id}/resimulate", ProposalStatus.PENDING_APPROVAL, {}),
    "create": ("post", "/proposals", None,
               {"twin": "{twin}", "asset": "pump-1", "action": "reduce_load",
                "parameters": {"fraction": 0.1}}),
    "evaluate": ("post", "/policy/evaluate", None,
                 {"twin": "{twin}", "asset": "pump-1", "action": "reduce_load",
                  "parameters": {"fraction": 0.1}}),
}
#: role, endpoint, status on a twin in the caller's scope, status on a twin outside it
TABLE = [
    ("viewer"    , "list"       , 200, 200),
    ("viewer"    , "detail"     , 200, 404),
    ("viewer"    , "page"       , 200, 404),
    ("viewer"    , "approve"    , 403, 404),
    ("viewer"    , "reject"     , 403, 404),
    ("viewer"    , "execute"    , 403, 404),
    ("viewer"    , "rollback"   , 403, 404),
    ("viewer"    , "resimulate" , 403, 404),
    ("viewer"    , "create"     , 403, 404),
    ("viewer"    , "evaluate"   , 403, 404),
    ("agent"     , "list"       , 200, 200),
    ("agent"     , "detail"     , 200, 404),
    ("agent"     , "page"       , 200, 404),
    ("agent"     , "approve"    , 403, 404),
    ("agent"     , "reject"     , 403, 404),
    ("agent"     , "execute"    , 403, 404),
    ("agent"     , "rollback"   , 403, 404),
    ("agent"     , "resimulate" , 200, 404),
    ("agent"     , "create"     , 201, 404),
    ("agent"     , "evaluate"   , 200, 404),
    ("executor"  , "list"       , 200, 200),
    ("executor"  , "detail"     , 200, 404),
    ("executor"  , "page"       , 200, 404),
    ("executor"  , "approve"    , 403, 404),
    ("executor"  , "reject"     , 403, 404),
    ("executor"  , "execute"    , 202, 404),
    ("executor"  , "rollback"   , 403, 404),
    ("executor"  , "resimulate" , 403, 404),
    ("executor"  , "create"     , 403, 404),
    ("executor"  , "evaluate"   , 403, 404),
    ("supervisor", "list"       , 200, 200),
    ("supervisor", "detail"     , 200, 404),
    ("supervisor", "page"       , 200, 404),
    ("supervisor", "approve"    , 200, 404),
    ("supervisor", "reject"     , 200, 404),
    ("supervisor", "execute"    , 403, 404),
    ("supervisor", "rollback"   , 202, 404),
    ("supervisor", "resimulate" , 200, 404),
    ("supervisor", "create"     , 201, 404),
    ("supervisor", "evaluate"   , 200, 404),
    ("admin"     , "list"       , 200, 200),
    ("admin"     , "detail"     , 200, 200),
    ("admin"     , "page"       , 200, 200),
    ("admin"     , "approve"    , 200, 200),
    ("admin"     , "reject"     , 200, 200),
    ("admin"     , "execute"    , 202, 202),
    ("admin"     , "rollback"   , 202, 202),
    ("admin"     , "resimulate" , 200, 200),
    ("admin"     , "create"     , 201, 201),
    ("admin"     , "evaluate"   , 200, 200),
    ("outsider"  , "list"       , 200, 200),
    ("outsider"  , "detail"     , 404, 404),
    ("outsider"  , "page"       , 404, 404),
    ("outsider"  , "approve"    , 404, 404),
    ("outsider"  , "reject"     , 404, 404),
    ("outsider"  , "execute"    , 404, 404),
    ("outsider"  , "rollback"   , 404, 404),
    ("outsider"  , "resimulate" , 404, 404),
    ("outsider"  , "create"     , 404, 404),
    ("outsider"  , "evaluate"   , 404, 404),
]


@pytest.fixture
def world(users, signing_key, settings, monkeypatch):
    """Two twins with a pump each, signed policies, role users granted only "plant"."""
    settings.MQTT_URL = None  # command outcomes are not what this table is about
    twins = {"in": Twin.objects.create(slug="plant", name="Plant"),
             "out": Twin.objects.create(slug="elsewhere", name="Elsewhere")}
    for twin in twins.values():
        pump = Asset.objects.create(twin=twin, slug="pump-1", name="Pump", kind=AssetKind.PUMP,
                                    metrics=[{"name": m} for m in factories.NORMAL])
        factories.reading(pump)
        factories.signed_policy(twin, signing_key)
    grant_only(users, twins["in"])
    monkeypatch.setattr("policy.services.proposals.run_what_if",
                        lambda *, asset, **kw: factories.simulation(asset))
    return twins


def state_for(twin: Twin, status, users):
    pump = twin.assets.get()
    if status == ProposalStatus.APPROVED:
        return factories.approved(pump, users["admin"])
    return factories.proposal(pump, status=status)


def call(client: Client, method: str, path: str, body):
    if method == "get":
        return client.get(path)
    return client.post(path, body, content_type="application/json")


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize(("role", "endpoint", "in_scope", "out_of_scope"), TABLE)
def test_role_endpoint_twin_matrix(world, users, role, endpoint, in_scope, out_of_scope, scope):
    """The API's answer, and for the proposal's verbs the dashboard's buttons
    (``policy.transitions.allowed_verbs``): both come from ``twins.scoping.may``."""
    method, path, status, body = ENDPOINTS[endpoint]
    twin = world[scope]
    proposal = state_for(twin, status, users) if status else None
    path = path.format(id=proposal.pk if proposal else 0)
    if body is not None:
        body = {k: v.format(twin=twin.slug) if isinstance(v, str) else v
                for k, v in body.items()}
    client = Client()
    client.force_login(users[role])
    expected = in_scope if scope == "in" else out_of_scope
    if proposal is not None and endpoint in VERBS:
        assert (endpoint in allowed_verbs(proposal, users[role])) == (expected < 300)
    response = call(client, method, path, body)
    assert response.status_code == expected, response.content[:300]


@pytest.mark.parametrize(("role", "sees"), [
    ("viewer", {"plant"}), ("supervisor", {"plant"}), ("admin", {"plant", "elsewhere"}),
    ("outsider", set()),
])
def test_lists_show_only_twins_in_scope(world, users, role, sees):
    for twin in world.values():
        state_for(twin, ProposalStatus.PENDING_APPROVAL, users)
    client = Client()
    client.force_login(users[role])
    listed = {p["twin"] for p in client.get("/proposals").json()}
    assert listed == sees
    page = client.get("/").content.decode()
    assert ("elsewhere" in page) == ("elsewhere" in sees)


def test_an_anonymous_caller_gets_nothing(world, users):
    proposal = state_for(world["in"], ProposalStatus.PENDING_APPROVAL, users)
    client = Client()
    assert client.get("/proposals").status_code in (401, 403)
    assert client.post(f"/proposals/{proposal.pk}/approve").status_code in (401, 403)
    assert client.post("/policy/evaluate", {}).status_code in (401, 403)
    assert client.get(f"/dashboard/proposals/{proposal.pk}/").status_code == 302


def test_a_per_twin_grant_to_a_role_group_scopes_its_members(world, users, django_user_model):
    from django.contrib.auth.models import Group

    member = django_user_model.objects.create_user("grouped", password="pw")
    member.groups.add(Group.objects.get(name="supervisor"))
    grant_twin(world["out"], to=Group.objects.get(name="supervisor"), role="supervisor")
    client = Client()
    client.force_login(member)
    proposal = state_for(world["out"], ProposalStatus.PENDING_APPROVAL, users)
    assert client.get(f"/proposals/{proposal.pk}").status_code == 200
    assert client.post(f"/proposals/{proposal.pk}/approve").status_code == 200
