"""Detection service: the rolling z-score turns a fault into one anomaly episode."""

from __future__ import annotations

import numpy as np
import pytest

from telemetry import handoff
from telemetry.detection import detect_anomalies
from telemetry.detectors import RollingZScore
from telemetry.models import Anomaly, DetectionState, DetectorConfig
from tests.fixtures import ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db
PRESSURE = 3


@pytest.fixture
def sensor(pump):
    """An asset of a kind watched by the seed's rolling z-score (no calibration needed)."""
    DetectorConfig.objects.update_or_create(
        asset_kind="generic", defaults={"detector": "zscore", "params": {}})
    pump.kind = "generic"
    pump.save()
    return pump


@pytest.fixture
def no_response(monkeypatch):
    """Record instead of running the policy response (tested in policy's tests)."""
    calls = []
    monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, calls)
    return calls


def test_a_sustained_step_becomes_one_critical_episode_not_hundreds(sensor, no_response):
    pump = sensor
    X = normal_pump_matrix(400)
    X[300:, PRESSURE] += 0.5  # a 50-sigma step in pressure that lasts 100 s
    ingest_matrix(pump, X)
    # Gaussian noise alone crosses |z| = 3 now and then (low/medium); the step is the one
    # critical episode, however many of its points were flagged.
    episode = Anomaly.objects.get(asset=pump, severity="critical")
    assert episode.metric == "Pressure"
    assert episode.started_at.timestamp() == 1704067200 + 300
    assert episode.score == 1.0
    assert episode.n_points >= 1
    assert episode.features["contributions"]["Pressure"] > 0.5
    assert episode.pk in no_response


def test_clean_telemetry_raises_nothing_critical(sensor, no_response):
    pump = sensor
    ingest_matrix(pump, normal_pump_matrix(600, seed=3))
    assert not Anomaly.objects.filter(asset=pump, severity__in=["high", "critical"]).exists()
    assert no_response == []


def test_each_point_is_scored_once_across_batches(sensor, no_response, settings):
    """GIVEN telemetry arriving in 6 batches, THEN the flagged points are exactly those of one
    pass of the rolling z-score over the whole series (history carried across batches)."""
    pump = sensor
    settings.DETECTION_EPISODE_GAP_SECONDS = 1
    X = normal_pump_matrix(300)
    X[250, PRESSURE] += 1.0  # one spike
    ingest_matrix(pump, X, batch=50)
    one_pass = RollingZScore(window=settings.DETECTION_WINDOW, threshold=3.0).score(X)
    assert sum(Anomaly.objects.values_list("n_points", flat=True)) == one_pass.flags.sum()
    spike = Anomaly.objects.get(asset=pump, severity="critical")
    assert spike.n_points == 1
    assert spike.started_at.timestamp() == 1704067200 + 250
    assert detect_anomalies(pump.pk) == []  # nothing new: watermark holds
    state = DetectionState.objects.get(asset=pump)
    assert state.scored_until.timestamp() == pytest.approx(1704067200 + 299)


def test_an_episode_is_cleared_once_the_signal_is_quiet(sensor, no_response, settings):
    pump = sensor
    settings.DETECTION_EPISODE_GAP_SECONDS = 10
    X = normal_pump_matrix(300)
    X[200, PRESSURE] += 1.0
    ingest_matrix(pump, X)
    episode = Anomaly.objects.get(asset=pump, severity="critical")
    assert episode.status == "cleared"
    assert episode.ended_at == episode.last_seen_at


def test_a_point_is_scored_against_the_window_before_it(sensor, no_response):
    pump = sensor
    X = normal_pump_matrix(200)
    X[150:, PRESSURE] = np.linspace(X[150, PRESSURE], X[150, PRESSURE] + 0.002, 50)
    ingest_matrix(pump, X)
    # a ramp of a fifth of one noise sigma over 50 s stays inside the noise
    assert not Anomaly.objects.filter(asset=pump, severity__in=["high", "critical"]).exists()


def test_one_detection_run_records_its_anomalies_together_in_order(sensor, no_response,
                                                                   settings):
    """GIVEN one batch whose scoring opens several episodes and clears some, THEN every
    opening and clearing is audited (one ``record_changes`` at the end of the run): the run's
    change events have consecutive ids and carry each anomaly's state at that step, their
    audit entries consecutive seq numbers in the same order, and the chain verifies."""
    from twins.audit_chain import verify_chain
    from twins.models import AuditEntry, ChangeEvent

    pump = sensor
    settings.DETECTION_EPISODE_GAP_SECONDS = 5
    X = normal_pump_matrix(400)
    for row in (150, 200, 250, 300):
        X[row, PRESSURE] += 1.0  # four spikes, each its own episode, each cleared after it
    ingest_matrix(pump, X)
    anomalies = list(Anomaly.objects.filter(asset=pump).order_by("pk"))
    assert len([a for a in anomalies if a.severity == "critical"]) == 4
    events = list(ChangeEvent.objects.filter(resource_type="anomaly").order_by("id"))
    entries = list(AuditEntry.objects.filter(resource_type="anomaly").order_by("seq"))
    assert [e.id for e in events] == list(range(events[0].id, events[0].id + len(events)))
    assert [e.seq for e in entries] == list(range(entries[0].seq, entries[0].seq + len(events)))
    assert [(e.type, e.data) for e in events] == [
        (f"anomaly.{'created' if a.action == 'anomaly.open' else 'updated'}", a.after)
        for a in entries]
    opened = [int(e.resource_id) for e in entries if e.action == "anomaly.open"]
    assert opened == [a.pk for a in anomalies]
    for anomaly in anomalies:
        cleared = [e.after for e in entries
                   if e.action == "anomaly.clear" and e.resource_id == str(anomaly.pk)]
        if anomaly.status == "cleared":
            assert [c["status"] for c in cleared] == ["cleared"]
    assert {e.after["status"] for e in entries if e.action == "anomaly.open"} == {"open"}
    assert verify_chain().ok
