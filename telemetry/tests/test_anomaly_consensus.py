"""Detector consensus is computed in telemetry when an anomaly opens and stored on it; policy
reads the stored value (issue 12: "consensus ... computed in telemetry, when the anomaly
opens, and stored on it")."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from policy.confidence import consensus
from telemetry.detection import detect_anomalies
from telemetry.models import Anomaly, DetectorConfig, TelemetrySample
from tests.fixtures import T0, ingest_matrix, normal_pump_matrix
from twins.choices import AssetKind
from twins.models import Asset

pytestmark = pytest.mark.django_db


@pytest.fixture
def motor(twin) -> Asset:
    DetectorConfig.objects.update_or_create(
        asset_kind=AssetKind.MOTOR,
        defaults={"detector": "zscore", "params": {}, "calibration_rows": 400})
    return Asset.objects.create(twin=twin, slug="motor-1", name="Motor 1", kind=AssetKind.MOTOR,
                                metrics=[{"name": "Temperature", "unit": "°C"}])


def test_an_anomaly_opened_on_a_one_metric_asset_stores_the_consensus_of_univariate_detectors(
        motor):
    """GIVEN a one-metric motor with a spike WHEN detection opens its anomaly THEN the anomaly
    carries the consensus: PCA is not applicable (one metric) and the share counts the four
    univariate voters only."""
    values = 60 + np.random.default_rng(2).normal(0, 0.5, 140)
    values[120:123] = 90.0
    TelemetrySample.objects.bulk_create(
        TelemetrySample(asset=motor, metric="Temperature", value=float(v),
                        ts=T0 + timedelta(seconds=i)) for i, v in enumerate(values))
    detect_anomalies(motor.pk)
    anomaly = Anomaly.objects.get(asset=motor)
    stored = anomaly.consensus
    assert stored["applicable"] == ["zscore", "mad", "ewma", "cusum"]
    assert stored["votes"]["pca_t2q"] is None and stored["votes"]["zscore"] is True
    voters = [v for v in stored["votes"].values() if v is not None]
    assert len(voters) == 4 and stored["share"] == sum(voters) / 4
    assert stored["episode_rows"] == anomaly.n_points


def test_a_multivariate_asset_lets_pca_vote(pump, settings):
    settings.SIMULATION_CALIBRATION_WINDOW = 300
    X = normal_pump_matrix(500)
    X[460:463, 7] += 40.0  # a flow spike
    ingest_matrix(pump, X)
    anomaly = Anomaly.objects.filter(asset=pump).order_by("started_at").first()
    assert anomaly is not None and anomaly.consensus is not None
    assert "pca_t2q" in anomaly.consensus["applicable"]
    assert anomaly.consensus["votes"]["pca_t2q"] in (True, False)


def test_policy_reads_the_stored_consensus_instead_of_refitting(motor):
    """A stored value no detector could produce (a vote of an unknown detector) comes back as
    is: policy did not re-fit; an anomaly without one is computed (the fallback)."""
    anomaly = Anomaly.objects.create(
        asset=motor, metric="Temperature", detector="zscore", kind="spike", severity="high",
        score=0.9, started_at=T0, last_seen_at=T0,
        consensus={"share": 0.25, "votes": {"oracle": True}, "applicable": ["oracle"]})
    assert consensus(anomaly, calibration_rows=100) == (0.25, {"oracle": True})
    anomaly.consensus = None
    assert consensus(anomaly, calibration_rows=100) == (0.0, {})  # no telemetry: no voter
