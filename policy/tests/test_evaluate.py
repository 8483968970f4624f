"""The dry run ("what would happen if I proposed this?") and proposing through the API, on a
real what-if simulation of a pump with 400 rows of normal telemetry."""

from __future__ import annotations

import pytest
from django.test import Client

from demo.skab import METRIC_NAMES
from policy.models import PolicyDocument, PolicyHighWater, Proposal
from policy.signing import sign
from policy.tests import factories
from simulation.models import SimulationRun
from telemetry import handoff
from tests.fixtures import T0, ingest_matrix, normal_pump_matrix
from twins.models import AuditEntry, ChangeEvent

pytestmark = pytest.mark.django_db
BODY = {"twin": "plant", "asset": "pump-1", "action": "reduce_load",
        "parameters": {"fraction": 0.1}, "metrics": ["Volume Flow RateRMS"]}


@pytest.fixture
def running_pump(pump, settings, monkeypatch, signing_key):
    """400 s of normal operation ingested (detection off), a signed but not yet used policy."""
    settings.SIMULATION_SAMPLES = 1000
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    ingest_matrix(pump, normal_pump_matrix(400), start=T0)
    body = factories.policy_body(pump.twin, version=1)
    PolicyDocument.objects.create(twin=pump.twin, version=1, body=body, key_id="test",
                                  signature=sign(body, signing_key))
    return pump


def counts() -> dict:
    return {model.__name__: model.objects.count() for model in
            (Proposal, SimulationRun, AuditEntry, ChangeEvent, PolicyHighWater)}


def test_the_dry_run_explains_the_decision_and_changes_nothing(running_pump, agent_client):
    before = counts()
    response = agent_client.post("/policy/evaluate", BODY, content_type="application/json")
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["dry_run"] is True
    assert [s["check"] for s in result["decision_trace"]][:5] == [
        "policy", "rbac", "forbidden", "interlocks", "risk"]
    assert result["policy"]["trusted"] is True
    assert result["simulation"]["status"] == "succeeded"
    assert result["simulation"]["metrics"]["Volume Flow RateRMS"]["p5"] < \
        result["simulation"]["metrics"]["Volume Flow RateRMS"]["p95"]
    assert result["status_if_proposed"] in ("approved", "pending_approval", "needs_analysis")
    assert set(result["evidence"]["state"]) == set(METRIC_NAMES)
    assert counts() == before


def test_a_viewer_may_not_run_the_dry_run(running_pump, viewer_client):
    response = viewer_client.post("/policy/evaluate", BODY, content_type="application/json")
    assert response.status_code == 403


def test_an_agent_proposes_through_the_api_with_a_fresh_simulation(
        running_pump, users, django_capture_on_commit_callbacks):
    client = Client()
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/proposals", BODY, content_type="application/json")
    assert response.status_code == 201, response.content
    proposal = Proposal.objects.get(pk=response.json()["id"])
    assert proposal.proposed_by == users["agent"]
    assert proposal.simulation.status == "succeeded"
    assert proposal.evidence["simulation"] == proposal.simulation_id
    assert proposal.policy_version == 1 and proposal.policy_trusted
    assert AuditEntry.objects.filter(action="proposal.create", actor="agent-user").count() == 1


def test_an_unknown_anomaly_is_a_bad_request(running_pump, agent_client):
    response = agent_client.post("/policy/evaluate", BODY | {"anomaly": 999},
                                 content_type="application/json")
    assert response.status_code == 400
