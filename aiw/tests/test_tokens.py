"""Agent tokens: bearer authentication, scopes, per-twin scope, expiry, admin and command."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from guardian.shortcuts import assign_perm

from aiw import services
from aiw.models import AgentToken
from aiw.tests.conftest import bearer, touch
from twins.models import Twin

pytestmark = [pytest.mark.django_db, pytest.mark.urls("aiw.tests.urls")]


def test_a_bearer_token_authenticates_as_its_user(client, agent_token):
    response = client.get("/.well-known/aiw-manifest.json", headers=bearer(agent_token))
    assert response.json()["caller"]["username"] == "agent-user"
    assert AgentToken.objects.get().last_used_at is not None


def test_only_the_sha256_of_a_token_is_stored(agent_token):
    row = AgentToken.objects.get()
    assert row.digest == hashlib.sha256(agent_token.encode()).hexdigest()
    stored = [str(getattr(row, f.attname)) for f in AgentToken._meta.fields]
    assert not any(agent_token in value for value in stored)
    assert re.fullmatch(r"aiw_[0-9a-f]{8}_[-\w]{43}", agent_token)


@pytest.mark.parametrize("spoil", ["revoke", "expire", "deactivate", "forge", "malform"])
def test_an_unusable_token_is_a_401_problem_with_a_bearer_challenge(
    client, agent_token, users, spoil
):
    row = AgentToken.objects.get()
    token = agent_token
    if spoil == "revoke":
        services.revoke_token(row.pk)
    elif spoil == "expire":
        AgentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif spoil == "deactivate":
        users["agent"].is_active = False
        users["agent"].save()
    elif spoil == "forge":
        token = agent_token[:-4] + "AAAA"
    else:
        token = "not-a-token"
    response = client.get("/diff", headers=bearer(token))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="opstwin"'
    assert response["Content-Type"] == "application/problem+json"


def test_a_read_only_token_may_read_but_not_write(client, make_token):
    token = make_token("agent", ["read"])
    assert client.get("/diff", headers=bearer(token)).status_code == 200
    response = client.post("/probe/count", {}, content_type="application/json",
                           headers=bearer(token))
    assert response.status_code == 403
    assert "write" in response.json()["detail"]


def test_a_write_token_may_post(client, make_token):
    token = make_token("agent", ["read", "write"])
    response = client.post("/probe/count", {}, content_type="application/json",
                           headers=bearer(token))
    assert response.status_code == 201


def test_a_token_sees_only_the_twins_its_user_is_granted(client, users, make_token, twin):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    assign_perm("twins.view_twin", users["outsider"], other)
    touch(twin)
    touch(other)
    token = make_token(user=users["outsider"])
    events = client.get("/diff", headers=bearer(token)).json()["events"]
    assert {e["twin"] for e in events} == {"elsewhere"}
    snapshot = client.get("/snapshot", headers=bearer(token)).json()
    assert [t["slug"] for t in snapshot["twins"]] == ["elsewhere"]


def test_unknown_scopes_are_refused(users):
    with pytest.raises(ValueError, match="admin"):
        services.issue_token(user=users["agent"], name="x", scopes=["read", "admin"])


def test_revoking_twice_records_one_revocation(agent_token):
    row = AgentToken.objects.get()
    assert services.revoke_token(row.pk) is True
    first = AgentToken.objects.get().revoked_at
    assert services.revoke_token(row.pk) is False
    assert AgentToken.objects.get().revoked_at == first


def test_an_admin_creates_a_token_in_django_admin_and_sees_it_once(admin_client, users):
    response = admin_client.post("/admin/aiw/agenttoken/add/", {
        "user": users["agent"].pk, "name": "planner", "scopes": ["read", "write"],
        "rate": ""})
    assert response.status_code == 200
    shown = re.search(r'id="agent-token"[^>]*>(aiw_[^<]+)<', response.content.decode())
    assert shown is not None
    row = AgentToken.objects.get(name="planner")
    assert row.scopes == ["read", "write"] and row.digest == hashlib.sha256(
        shown.group(1).encode()).hexdigest()
    listing = admin_client.get("/admin/aiw/agenttoken/").content.decode()
    detail = admin_client.get(f"/admin/aiw/agenttoken/{row.pk}/change/").content.decode()
    assert shown.group(1) not in listing and shown.group(1) not in detail


def test_an_admin_revokes_tokens_with_the_admin_action(admin_client, agent_token):
    row = AgentToken.objects.get()
    admin_client.post("/admin/aiw/agenttoken/", {"action": "revoke",
                                                 "_selected_action": [row.pk]})
    assert AgentToken.objects.get().revoked_at is not None


def test_the_management_command_creates_lists_and_revokes_tokens(users, client):
    out = StringIO()
    call_command("agent_token", "create", "--user", "agent-user", "--name", "cli",
                 "--scopes", "read", "--expires-in-days", "1", stdout=out)
    token = out.getvalue().strip()
    assert client.get("/diff", headers=bearer(token)).status_code == 200
    listing = StringIO()
    call_command("agent_token", "list", stdout=listing)
    assert "cli" in listing.getvalue() and token not in listing.getvalue()
    call_command("agent_token", "revoke", token[:12], stdout=StringIO())
    assert client.get("/diff", headers=bearer(token)).status_code == 401
