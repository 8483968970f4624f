"""The OpenAPI document: every AIW endpoint with its shapes, and offline docs. schemathesis
over the whole API runs in test_api_fuzz.py."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db
AIW_PATHS = ["/.well-known/aiw-manifest.json", "/schemas", "/schemas/{name}", "/diff",
             "/snapshot", "/subscribe"]


@pytest.fixture
def openapi(client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_every_aiw_endpoint_is_documented_with_its_shapes(openapi):
    paths = openapi["paths"]
    assert set(AIW_PATHS) <= set(paths)
    diff = paths["/diff"]["get"]
    assert diff["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DiffPage"}
    assert "application/problem+json" in diff["responses"]["410"]["content"]
    assert {p["name"] for p in diff["parameters"]} >= {"since", "limit", "types", "twin"}
    assert "text/event-stream" in paths["/subscribe"]["get"]["responses"]["200"]["content"]
    assert openapi["components"]["securitySchemes"]["agentToken"]["scheme"] == "bearer"
    every = [op for item in paths.values() for op in item.values()]
    assert all("default" in op["responses"] for op in every)
    assert len({op["operationId"] for op in every}) == len(every)


def test_the_manifest_lists_every_documented_operation(client, openapi):
    listed = client.get("/.well-known/aiw-manifest.json").json()["operations"]
    documented = {(m.upper(), p) for p, item in openapi["paths"].items() for m in item}
    assert {(o["method"], o["path"]) for o in listed} == documented


def test_swagger_ui_is_served_offline(client):
    page = client.get("/api/docs/").content.decode()
    assets = re.findall(r'src="([^"]+swagger-ui[^"]+\.js)"', page)
    assert assets and all(a.startswith("/static/") for a in assets)
    assert "cdn" not in page.lower()


@pytest.mark.parametrize(("method", "path", "statuses"), [
    ("post", "/proposals/{id}/approve", {"401", "403", "404", "409", "429"}),
    ("post", "/proposals/{id}/reject", {"400", "401", "403", "404", "409", "415", "429"}),
    ("post", "/proposals", {"400", "401", "403", "404", "415", "429"}),
    ("get", "/proposals", {"400", "401", "403", "429"}),
    ("post", "/telemetry/ingest", {"400", "401", "403", "413", "429"}),
    ("post", "/sim/runs/{id}/cancel", {"401", "403", "404", "409", "429"}),
    ("get", "/diff", {"400", "401", "403", "410", "429"}),
    ("get", "/schemas/{name}", {"401", "404", "429"}),
])
def test_each_operation_documents_the_error_statuses_it_answers(openapi, method, path,
                                                                 statuses):
    responses = openapi["paths"][path][method]["responses"]
    assert statuses <= set(responses)
    for status in statuses:
        assert "application/problem+json" in responses[status]["content"]


def test_each_operation_has_its_own_summary(openapi):
    summaries = [op["summary"] for item in openapi["paths"].values() for op in item.values()]
    assert len(set(summaries)) == len(summaries)
    proposals = openapi["paths"]["/proposals/{id}/reject"]["post"]["summary"]
    assert proposals == "Reject a pending proposal, with a reason"
    ingest = openapi["paths"]["/telemetry/ingest"]["post"]["summary"]
    assert ingest == "telemetry.v1 events over HTTP"


def test_the_proposal_filters_are_enums(openapi):
    params = {p["name"]: p["schema"] for p in openapi["paths"]["/proposals"]["get"]["parameters"]}
    assert set(params["decision"]["enum"]) == {"auto_execute", "require_approval",
                                               "require_analysis", "reject"}
    assert "enum" in params["status"] and "enum" in params["risk_level"]
