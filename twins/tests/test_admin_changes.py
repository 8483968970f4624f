"""Every admin edit goes through a service: audited, and on the feed agents follow.

Issue 11's side doors: twins, assets, detector configs and agent tokens used to be saved by
Django admin with plain ``save()``, so ``/diff`` and ``/snapshot`` never saw them. Each test
edits through the real admin forms as the admin role and reads ``/diff`` back.
"""

from __future__ import annotations

import pytest
from django.test import TestCase

from aiw.models import AgentToken
from telemetry.models import DetectorConfig
from twins.models import Asset, AuditEntry, Twin
from twins.schemas import RESOURCE_SCHEMAS, errors

pytestmark = pytest.mark.django_db


def feed(client) -> list[dict]:
    return client.get("/diff", {"since": "0", "limit": "500"}).json()["events"]


def post(client, url: str, data: dict):
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return response


def assert_valid(event: dict) -> None:
    assert errors("change-event.v1", event) == []
    if event["operation"] != "deleted":
        assert errors(RESOURCE_SCHEMAS[event["resource_type"]], event["data"]) == []


INLINE_EMPTY = {"assets-TOTAL_FORMS": "0", "assets-INITIAL_FORMS": "0",
                "assets-MIN_NUM_FORMS": "0", "assets-MAX_NUM_FORMS": "1000"}


def test_a_twin_and_its_inline_asset_made_in_admin_are_on_the_feed(admin_client, users):
    post(admin_client, "/admin/twins/twin/add/", {
        "slug": "mill", "name": "Mill", "description": "",
        **INLINE_EMPTY, "assets-TOTAL_FORMS": "1",
        "assets-0-slug": "fan-1", "assets-0-name": "Fan 1", "assets-0-kind": "generic"})
    twin = Twin.objects.get(slug="mill")
    events = [e for e in feed(admin_client) if e["twin"] == "mill"]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("twin.created", "admin-user"), ("asset.created", "admin-user")]
    for event in events:
        assert_valid(event)
    assert AuditEntry.objects.filter(twin_slug="mill", role="admin").count() == 2
    assert Asset.objects.get(twin=twin).slug == "fan-1"


def test_an_asset_changed_and_deleted_in_admin_is_audited_with_before_and_after(
        admin_client, pump):
    post(admin_client, f"/admin/twins/asset/{pump.pk}/change/", {
        "twin": pump.twin_id, "slug": pump.slug, "name": "Pump 1 (rebuilt)", "kind": "pump",
        "metadata": "{}", "metrics": '[{"name": "Pressure"}]'})
    entry = AuditEntry.objects.get(action="asset.update")
    assert entry.before["name"] == "Pump 1" and entry.after["name"] == "Pump 1 (rebuilt)"
    post(admin_client, f"/admin/twins/asset/{pump.pk}/delete/", {"post": "yes"})
    types = [e["type"] for e in feed(admin_client)]
    assert types[-2:] == ["asset.updated", "asset.deleted"]
    assert AuditEntry.objects.get(action="asset.delete").before["slug"] == "pump-1"


def test_a_detector_config_changed_in_admin_is_on_the_feed_with_before_and_after(
        admin_client, users):
    config = DetectorConfig.objects.get(asset_kind="generic")  # seeded by migrations
    post(admin_client, f"/admin/telemetry/detectorconfig/{config.pk}/change/", {
        "asset_kind": "generic", "detector": "zscore", "params": "{}",
        "calibration_rows": "200"})
    [event] = [e for e in feed(admin_client) if e["resource_type"] == "detector_config"]
    assert (event["type"], event["resource_id"]) == ("detector_config.updated", str(config.pk))
    assert event["data"]["calibration_rows"] == 200
    assert_valid(event)
    entry = AuditEntry.objects.get(action="detector_config.update")
    assert entry.before["detector"] == config.detector and entry.after["detector"] == "zscore"


def test_a_detector_config_the_library_rejects_is_refused_and_not_recorded(admin_client, users):
    config = DetectorConfig.objects.get(asset_kind="generic")
    response = admin_client.post(f"/admin/telemetry/detectorconfig/{config.pk}/change/", {
        "asset_kind": "generic", "detector": "no-such-detector", "params": "{}",
        "calibration_rows": "400"})
    assert response.status_code == 200  # the form again, with the error
    config.refresh_from_db()
    assert config.detector != "no-such-detector"
    assert not AuditEntry.objects.filter(resource_type="detector_config").exists()


def test_agent_tokens_issued_changed_and_revoked_in_admin_are_audited_without_secrets(
        admin_client, users):
    agent = users["agent"]
    response = admin_client.post("/admin/aiw/agenttoken/add/", {
        "user": agent.pk, "name": "line-bot", "scopes": ["read"], "rate": ""})
    assert response.status_code == 200 and b"aiw_" in response.content  # shown once
    token = AgentToken.objects.get(name="line-bot")
    post(admin_client, f"/admin/aiw/agenttoken/{token.pk}/change/", {"rate": "60/min"})
    post(admin_client, "/admin/aiw/agenttoken/", {
        "action": "revoke", "_selected_action": [token.pk]})
    events = [e for e in feed(admin_client) if e["resource_type"] == "agent_token"]
    assert [e["type"] for e in events] == ["agent_token.created", "agent_token.updated",
                                           "agent_token.updated"]
    assert events[1]["data"]["rate"] == "60/min"
    assert events[2]["data"]["revoked_at"] is not None
    for event in events:
        assert_valid(event)
        assert token.digest not in str(event)
    # revoke, never delete: the delete view is forbidden and the row stays
    assert admin_client.post(f"/admin/aiw/agenttoken/{token.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert AgentToken.objects.filter(pk=token.pk).exists()


def test_token_events_are_twin_less_so_only_admins_and_the_actor_see_them(
        admin_client, viewer_client, users):
    admin_client.post("/admin/aiw/agenttoken/add/", {
        "user": users["agent"].pk, "name": "line-bot", "scopes": ["read"], "rate": ""})
    assert any(e["resource_type"] == "agent_token" for e in feed(admin_client))
    assert not any(e["resource_type"] == "agent_token" for e in feed(viewer_client))
