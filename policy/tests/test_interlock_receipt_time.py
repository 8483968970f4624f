"""Interlocks and the drift check judge the reading OpsTwin received last (issue 10, item 3).

A sensor may date readings up to INGEST_MAX_FUTURE_SECONDS (300 s) ahead and ingest accepts
them. Such a reading must never shadow the readings received after it, and never decide an
interlock itself. Telemetry goes through the real HTTP ingest, as in the review.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from demo.skab import METRIC_NAMES
from policy import interlocks, services
from policy.choices import Decision, ProposalStatus
from policy.errors import InterlockBlocked, StaleEvidence
from policy.models import Proposal
from policy.state import MAX_CLOCK_SKEW_S, drift, evidence_snapshot, latest_reading
from policy.tests import factories
from telemetry.choices import IngestSource
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import T0, event, normal_pump_matrix
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db
LOW_PRESSURE = {"id": "low-pressure", "metric": "Pressure", "op": "<", "value": 5,
                "max_age_s": 60, "guards": ["reduce_load"]}
BODY = {"twin": "plant", "asset": "pump-1", "action": "reduce_load",
        "parameters": {"fraction": 0.1}, "metrics": ["Volume Flow RateRMS"]}
ROW = dict(zip(METRIC_NAMES, map(float, normal_pump_matrix(1)[0]), strict=True))


@pytest.fixture
def guarded_pump(pump, settings, signing_key):
    """400 s of normal history (2024) and a signed policy with the interlock Pressure < 5."""
    settings.SIMULATION_SAMPLES = 1000
    payloads = [RawPayload(body=event(pump, T0 + timedelta(seconds=i),
                                      dict(zip(METRIC_NAMES, map(float, row), strict=True))))
                for i, row in enumerate(normal_pump_matrix(400))]
    assert not ingest_batch(payloads, source=IngestSource.REPLAY).rejected
    document, verdict = factories.signed_policy(pump.twin, signing_key,
                                                interlocks=[LOW_PRESSURE])
    assert verdict.trusted, verdict.reason
    return pump


def send(client, asset, pressure: float, *, ahead_s: float = 0.0) -> None:
    """POST one full pump reading with ``Pressure`` = ``pressure``, dated now + ``ahead_s``."""
    ts = timezone.now() + timedelta(seconds=ahead_s)
    response = client.post("/telemetry/ingest", event(asset, ts, ROW | {"Pressure": pressure}),
                           content_type="application/json")
    assert response.status_code == 201, response.content


def interlock_step(client) -> dict:
    response = client.post("/policy/evaluate", BODY, content_type="application/json")
    assert response.status_code == 200, response.content
    result = response.json()
    step = next(s for s in result["decision_trace"] if s["check"] == "interlocks")
    return result | {"step": step}


def test_a_future_dated_reading_cannot_open_an_interlock_at_evaluation_or_execution(
        guarded_pump, agent_client, users):
    """GIVEN the interlock Pressure < 5, WHEN Pressure=50 arrives, then Pressure=1 dated
    240 s ahead, then Pressure=80, THEN evaluation denies on 80 (not "1 < 5: ok"), a proposal
    is rejected, and WHEN an approved proposal is executed after Pressure=90 arrives, THEN
    execution is blocked by the interlock on 90 and nothing runs."""
    pump = guarded_pump
    send(agent_client, pump, 50.0)
    first = interlock_step(agent_client)
    assert first["decision"] == Decision.REJECT
    assert "Pressure 50 < 5" in first["step"]["detail"]

    send(agent_client, pump, 1.0, ahead_s=240)
    send(agent_client, pump, 80.0)
    second = interlock_step(agent_client)
    assert second["decision"] == Decision.REJECT
    assert second["step"]["passed"] is False
    assert second["step"]["results"][0]["observed"] == 80.0
    assert "Pressure 80 < 5" in second["step"]["detail"]
    assert second["evidence"]["state"]["Pressure"]["value"] == 80.0

    proposal = services.propose(asset=pump, action="reduce_load", parameters={},
                                simulation=factories.simulation(pump))
    assert proposal.decision == Decision.REJECT
    assert proposal.decision_trace[-1]["check"] == "interlocks"

    approved = factories.approved(pump, users["supervisor"],
                                  run=factories.simulation(pump, std=5.0))
    send(agent_client, pump, 90.0)
    with pytest.raises(InterlockBlocked, match="Pressure 90 < 5") as blocked:
        services.execute_proposal(approved.pk)
    assert blocked.value.status == 409
    assert Proposal.objects.get(pk=approved.pk).status == ProposalStatus.APPROVED
    assert AuditEntry.objects.filter(resource_id=str(approved.pk),
                                     action="proposal.blocked").count() == 1


def test_a_reading_dated_in_the_future_never_decides_an_interlock(guarded_pump, agent_client):
    """GIVEN Pressure=1 (would pass) received last but dated 240 s ahead, THEN the interlock
    denies with "dated in the future", at evaluation and in the interlock check itself."""
    send(agent_client, guarded_pump, 50.0)
    send(agent_client, guarded_pump, 1.0, ahead_s=240)
    result = interlocks.check(LOW_PRESSURE, asset=guarded_pump, now=timezone.now())
    assert result.passed is False
    assert result.observed == 1.0
    assert "reading dated in the future" in result.detail
    step = interlock_step(agent_client)["step"]
    assert step["passed"] is False and "reading dated in the future" in step["detail"]


def test_execution_refuses_when_the_last_reading_is_dated_in_the_future(
        guarded_pump, agent_client, users):
    """GIVEN an approved proposal decided on Pressure=1, WHEN the next reading, also 1, is
    dated 240 s ahead, THEN the evidence cannot be confirmed (drift: dated in the future) and
    execution is refused; the interlock check alone denies as well."""
    send(agent_client, guarded_pump, 1.0)
    approved = factories.approved(guarded_pump, users["supervisor"])
    assert interlocks.check(LOW_PRESSURE, asset=guarded_pump, now=timezone.now()).passed
    send(agent_client, guarded_pump, 1.0, ahead_s=240)
    drifted = drift(approved.evidence, guarded_pump)
    assert {d["metric"] for d in drifted} == set(METRIC_NAMES)
    assert {d["reason"] for d in drifted} == {
        "reading dated in the future (240 s after its receipt)"}
    with pytest.raises(StaleEvidence, match="Pressure"):
        services.execute_proposal(approved.pk)
    assert not interlocks.check(LOW_PRESSURE, asset=guarded_pump, now=timezone.now()).passed


def test_the_drift_check_sees_readings_received_after_a_future_dated_one(
        guarded_pump, agent_client):
    """GIVEN evidence taken while a reading dated 240 s ahead was the last received, WHEN
    Pressure=90 arrives now, THEN Pressure has drifted (by sensor time the future reading
    would still look current and hide the change)."""
    send(agent_client, guarded_pump, 50.0)
    send(agent_client, guarded_pump, 1.0, ahead_s=240)
    evidence = evidence_snapshot(guarded_pump, factories.simulation(guarded_pump), sigmas=4.0)
    assert evidence["state"]["Pressure"]["value"] == 1.0
    send(agent_client, guarded_pump, 90.0)
    drifted = {d["metric"]: d for d in drift(evidence, guarded_pump)}
    assert drifted["Pressure"]["current"] == 90.0
    assert drifted["Pressure"]["reason"] == "outside tolerance"


def test_a_reading_within_the_clock_skew_still_decides(guarded_pump, agent_client):
    send(agent_client, guarded_pump, 1.0, ahead_s=MAX_CLOCK_SKEW_S / 2)
    result = interlocks.check(LOW_PRESSURE, asset=guarded_pump, now=timezone.now())
    assert result.passed is True and result.observed == 1.0


def test_a_reading_received_before_the_horizon_is_judged_stale(pump):
    """The search by receipt is bounded by max_age_s; older data is still reported (as stale)."""
    old = timezone.now() - timedelta(seconds=120)
    factories.reading(pump, {"Pressure": 1.0}, ts=old, received_at=old)
    reading = latest_reading(pump, "Pressure", horizon_s=60)
    assert reading is not None and reading.value == 1.0 and reading.received_at == old
    result = interlocks.check(LOW_PRESSURE, asset=pump, now=timezone.now())
    assert result.passed is False and "stale" in result.detail
