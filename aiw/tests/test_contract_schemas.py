"""The served schemas as a contract (issue 13 item 2): each ``$id`` is the URL it is served at,
``$ref``s are relative and resolve by fetching, errors have a schema the manifest names, and
policy events have theirs."""

from __future__ import annotations

import json

import pytest

from aiw.tests.test_contract_states import Served

pytestmark = pytest.mark.django_db


def _refs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_each_schema_is_served_with_its_url_as_id_and_relative_refs(client):
    index = client.get("/schemas").json()["schemas"]
    assert len(index) >= 15
    for entry in index:
        assert entry["url"] == f"http://testserver/schemas/{entry['name']}"
        document = client.get(f"/schemas/{entry['name']}").json()
        assert document["$id"] == entry["url"]
        assert all("://" not in ref for ref in _refs(document)), entry["name"]


def test_public_url_sets_the_ids_and_the_manifests_links(client, settings):
    settings.PUBLIC_URL = "https://ops.example.com"
    document = client.get("/schemas/proposal.v1").json()
    assert document["$id"] == "https://ops.example.com/schemas/proposal.v1"
    manifest = client.get("/.well-known/aiw-manifest.json").json()
    assert manifest["schemas"]["proposal.v1"] == document["$id"]
    assert manifest["endpoints"]["proposals"] == "https://ops.example.com/proposals"
    assert manifest["endpoints"]["websocket"] == "wss://ops.example.com/ws/feed"
    assert manifest["actions"]["url"] == "https://ops.example.com/actions"


def test_a_validator_that_fetches_rejects_what_the_old_serializer_sent(client):
    """The issue's finding: an executing proposal's execution was only {"preflight": ...};
    fetched over HTTP, proposal.v1 → action.v1 (a relative $ref) refuses it."""
    served = Served(client)
    proposal = {"execution": {"preflight": {"interlocks": []}}}
    assert any(e.startswith("execution:") for e in served.errors("proposal.v1", proposal))
    assert served.errors("action.v1", {"preflight": {"interlocks": []}})


def test_the_manifest_names_the_problem_schema_and_the_policy_events(client):
    manifest = client.get("/.well-known/aiw-manifest.json").json()
    assert manifest["errors"]["schema"] == manifest["schemas"]["problem.v1"]
    assert manifest["errors"]["content_type"] == "application/problem+json"
    assert manifest["resources"]["policy"] == "policy.v1"
    assert set(manifest["resources"].values()) <= set(manifest["schemas"])
    assert manifest["actions"]["schema"] == manifest["schemas"]["action-catalogue.v1"]


def test_error_responses_validate_against_the_served_problem_schema(client, admin_client, pump):
    served = Served(client)
    body = {"twin": "plant", "asset": "pump-1", "action": "reduce_load",
            "parameters": {"fraction": "1"}}
    cases = [
        (client.get("/schemas/nope.v9"), 404),
        (admin_client.get("/diff", {"since": "not-a-cursor"}), 410),
        (admin_client.post("/proposals", json.dumps(body), content_type="application/json"),
         400),
        (client.get("/proposals"), 401),
        (admin_client.delete("/proposals"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status
        assert response["Content-Type"] == "application/problem+json"
        served.check("problem.v1", response.json(), f"{status} problem")
    assert served.errors("problem.v1", {"type": "x", "title": "t", "status": 200})


def test_the_catalogue_validates_against_its_served_schema(client, admin_client, pump):
    served = Served(client)
    served.check("action-catalogue.v1", admin_client.get("/actions").json())
    manifest = admin_client.get("/.well-known/aiw-manifest.json").json()
    served.check("action-catalogue.v1", manifest["actions"])
    assert manifest["actions"]["twins"]["plant"]["kinds"]["pump"]["assets"] == ["pump-1"]
