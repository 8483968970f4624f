"""Configured, calibrated detectors in the ingest path, and the anomaly lifecycle."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from telemetry import handoff
from telemetry.anomalies import (
    NotAllowed,
    WrongState,
    acknowledge_anomaly,
    escalate_unacknowledged,
)
from telemetry.calibration import calibrate
from telemetry.models import Anomaly, AssetCalibration, DetectorConfig
from tests.fixtures import T0, ingest_matrix, normal_pump_matrix
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db
PRESSURE = 3


@pytest.fixture(autouse=True)
def no_response(monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, [])


def test_a_pump_is_calibrated_on_its_first_rows_and_never_scores_them(pump):
    """GIVEN pumps watched by EWMA calibrated on 400 rows, WHEN 400 clean rows then a pressure
    step arrive, THEN the step is one episode by ewma and nothing inside the window is flagged."""
    X = normal_pump_matrix(600)
    X[:400, PRESSURE] += 2.0  # would be absurd if scored: the window is calibration only
    X[400:, PRESSURE] += 2.0
    X[500:, PRESSURE] += 0.3
    ingest_matrix(pump, X, batch=100)
    calibration = AssetCalibration.objects.get(asset=pump)
    assert (calibration.detector, calibration.n_rows) == ("ewma", 400)
    assert calibration.end == T0 + timedelta(seconds=399)
    anomalies = list(Anomaly.objects.filter(asset=pump))
    assert {a.detector for a in anomalies} == {"ewma"}
    assert min(a.started_at for a in anomalies) >= T0 + timedelta(seconds=500)
    step = max(anomalies, key=lambda a: a.score)
    assert step.metric == "Pressure"
    assert step.features["contributions"]["Pressure"] > 0.5


def test_nothing_is_scored_before_the_calibration_window_is_full(pump):
    ingest_matrix(pump, normal_pump_matrix(150))
    assert not AssetCalibration.objects.exists()
    assert not Anomaly.objects.exists()


def test_changing_the_config_refits_the_calibration(pump):
    ingest_matrix(pump, normal_pump_matrix(450))
    DetectorConfig.objects.filter(asset_kind="pump").update(detector="mad", params={})
    ingest_matrix(pump, normal_pump_matrix(10, seed=9), start=T0 + timedelta(seconds=450))
    assert AssetCalibration.objects.get(asset=pump).detector == "mad"


def test_a_declared_normal_period_can_be_used_for_calibration(pump):
    ingest_matrix(pump, normal_pump_matrix(300))
    calibration = calibrate(pump, start=T0 + timedelta(seconds=100),
                            end=T0 + timedelta(seconds=199))
    assert calibration.n_rows == 100
    assert calibration.start == T0 + timedelta(seconds=100)
    with pytest.raises(ValueError, match="at least 20 rows"):
        calibrate(pump, start=T0 + timedelta(seconds=100), end=T0 + timedelta(seconds=105))


def _critical(pump) -> Anomaly:
    return Anomaly.objects.create(asset=pump, metric="Pressure", detector="ewma", kind="drift",
                                  severity="critical", score=1.0, started_at=T0,
                                  last_seen_at=T0, features={})


def test_a_supervisor_acknowledges_with_a_comment(pump, users):
    anomaly = _critical(pump)
    with pytest.raises(ValueError, match="comment"):
        acknowledge_anomaly(anomaly.pk, actor=users["supervisor"], comment=" ")
    with pytest.raises(NotAllowed):
        acknowledge_anomaly(anomaly.pk, actor=users["viewer"], comment="seen")
    acked = acknowledge_anomaly(anomaly.pk, actor=users["supervisor"], comment="valve check")
    assert (acked.status, acked.acknowledged_by, acked.ack_comment) == (
        "acknowledged", users["supervisor"], "valve check")
    assert AuditEntry.objects.get(action="anomaly.acknowledge").reason == "valve check"
    with pytest.raises(WrongState):
        acknowledge_anomaly(anomaly.pk, actor=users["supervisor"], comment="again")


def test_an_unacknowledged_critical_anomaly_escalates_once(pump, settings):
    settings.ANOMALY_ESCALATE_AFTER_SECONDS = 60
    anomaly = _critical(pump)
    assert escalate_unacknowledged(now=timezone.now()) == []
    later = timezone.now() + timedelta(seconds=61)
    assert escalate_unacknowledged(now=later) == [anomaly.pk]
    assert escalate_unacknowledged(now=later) == []
    assert AuditEntry.objects.filter(action="anomaly.escalate").count() == 1


def test_an_acknowledged_anomaly_does_not_escalate(pump, users, settings):
    settings.ANOMALY_ESCALATE_AFTER_SECONDS = 1
    anomaly = _critical(pump)
    acknowledge_anomaly(anomaly.pk, actor=users["supervisor"], comment="on it")
    assert escalate_unacknowledged(now=timezone.now() + timedelta(seconds=5)) == []


def test_the_asset_page_charts_metrics_and_acknowledges(supervisor_client, pump):
    anomaly = _critical(pump)
    ingest_matrix(pump, normal_pump_matrix(50))
    page = supervisor_client.get(f"/twins/{pump.twin.slug}/{pump.slug}/").content.decode()
    assert page.count('class="uplot-box"') == 8  # one chart per metric
    data = json.loads(re.search(r'<script id="chart-data" type="application/json">(.*?)</script>',
                                page, re.S).group(1))
    assert [severity for _, _, severity in data["episodes"]] == ["critical"]  # shaded
    response = supervisor_client.post(f"/telemetry/anomalies/{anomaly.pk}/acknowledge",
                                      {"comment": "checking the inlet valve"})
    assert response.status_code == 302
    anomaly.refresh_from_db()
    assert anomaly.status == "acknowledged"
