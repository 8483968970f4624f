"""Bad input is a 4xx problem, never a 500: the cases an outside review found by hand."""

from __future__ import annotations

import json

import pytest

from policy.tests.factories import proposal
from telemetry.models import TelemetryEvent
from twins.models import Asset

pytestmark = pytest.mark.django_db

NESTED = "[" * 10_000 + "]" * 10_000
PROBLEM = "application/problem+json"


@pytest.fixture
def api(admin_client):
    return admin_client


@pytest.fixture
def asset(twin) -> Asset:
    return Asset.objects.create(twin=twin, slug="pump-1", name="Pump 1", kind="pump",
                                metrics=[{"name": "Pressure", "unit": "bar"}])


def _post(client, url: str, body: str, content_type: str = "application/json"):
    return client.generic("POST", url, body, content_type=content_type)


def _is_problem(response, status: int) -> bool:
    return (response.status_code == status and response["Content-Type"] == PROBLEM
            and response.json()["status"] == status)


@pytest.mark.parametrize("body", ["", "  ", "[]"])
def test_an_empty_ingest_body_or_array_is_a_400_problem(api, body):
    assert _is_problem(_post(api, "/telemetry/ingest", body), 400)


@pytest.mark.parametrize("url", ["/proposals", "/policy/evaluate", "/sim/run",
                                 "/proposals/{id}/reject", "/proposals/{id}/rollback"])
def test_json_nested_ten_thousand_deep_is_a_400_problem(api, asset, url):
    target = proposal(asset)
    response = _post(api, url.format(id=target.pk), NESTED)
    assert _is_problem(response, 400)
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_parameter_that_overflows_to_infinity_is_a_400_problem(api, asset, number):
    body = ('{"twin": "plant", "asset": "pump-1", "action": "reduce_load", '
            f'"parameters": {{"fraction": {number}}}}}')
    response = _post(api, "/proposals", body)
    assert _is_problem(response, 400)
    assert "out of range" in response.json()["detail"]


@pytest.mark.parametrize("field", [
    {"seed": {}}, {"seed": [None, None]}, {"seed": "7"}, {"seed": 1.5}, {"seed": True},
    {"n_samples": "100"}, {"n_samples": None}, {"n_samples": []}, {"n_samples": {}},
    {"max_samples": "100"}, {"max_samples": []}, {"n_samples": 3e6},
    {"n_samples": 2000001.0}, {"max_samples": 1e16}, {"n_samples": 1.5},
])
def test_malformed_seeds_and_sample_counts_are_400_problems(api, field):
    body = {"inputs": {"x": {"dist": "normal", "params": {"mean": 10.0, "std": 1.0}}},
            "n_samples": 1000} | field
    response = _post(api, "/sim/run", json.dumps(body))
    assert _is_problem(response, 400), response.content[:300]


@pytest.mark.parametrize("verb", ["reject", "rollback"])
def test_an_empty_json_body_is_a_400_problem_naming_the_reason(api, asset, verb):
    target = proposal(asset)
    response = _post(api, f"/proposals/{target.pk}/{verb}", "{}")
    assert _is_problem(response, 400)
    assert "reason" in response.json()["errors"]


@pytest.mark.parametrize("url", ["/proposals/{pk}/reject", "/proposals/{pk}/rollback",
                                 "/proposals", "/policy/evaluate", "/sim/run"])
def test_a_form_body_is_a_415_problem_the_api_takes_json_only(api, asset, url):
    """A form cannot say null and the OpenAPI documents JSON bodies only (issue 13 item 3)."""
    target = proposal(asset)
    response = api.post(url.format(pk=target.pk), {"reason": "form"})
    assert _is_problem(response, 415)


def test_a_timestamp_in_year_one_is_refused(api, asset):
    event = {"event_id": "7b0e8f1e-2a47-4c53-9f7e-5d0f3f1b2c11", "twin_id": "plant",
             "asset_id": "pump-1", "ts": "0001-01-01T00:00:00Z", "metrics": {"Pressure": 1.0}}
    response = _post(api, "/telemetry/ingest", json.dumps(event))
    assert _is_problem(response, 400)
    assert not TelemetryEvent.objects.filter(asset=asset).exists()


def test_a_wrong_method_is_a_405_problem_with_a_readable_title(api):
    response = api.delete("/telemetry/ingest")
    assert _is_problem(response, 405)
    assert response.json()["title"] == "Method Not Allowed"
    assert 'Method "DELETE" not allowed.' in response.json()["detail"]


@pytest.mark.parametrize("url", ["/admin/telemetry/anomaly/add/",
                                 "/admin/telemetry/deadletter/add/"])
def test_admin_offers_no_add_form_for_records_written_by_the_system(api, url):
    assert api.get(url).status_code == 403


@pytest.mark.parametrize("query", ["decision=bogus", "decision=", "status=", "risk_level=low"])
def test_a_proposal_filter_outside_its_enum_or_empty_is_a_400_problem(api, query):
    response = api.get(f"/proposals?{query}")
    assert _is_problem(response, 400)
    assert query.split("=")[0] in response.json()["errors"]


def test_a_proposal_filter_inside_its_enum_filters(api, asset):
    proposal(asset)
    assert len(api.get("/proposals?decision=require_approval").json()) == 1
    assert api.get("/proposals?decision=reject").json() == []
