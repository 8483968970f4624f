"""One asset's failing detection neither fails the ingest request nor stops the others
(issue 10, item 9).

The failure is real, not mocked: a one-metric valve whose kind is configured with the PCA
T²+Q detector, which needs two varying metrics and raises ValueError when it is fitted. The
requests run in committed transactions (``transaction=True``), so the after-commit detection
runs inside the HTTP request exactly as in production with eager Celery.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from policy.confidence import consensus
from telemetry.models import Anomaly, DetectionState, DetectorConfig, TelemetrySample
from tests.fixtures import T0, event
from twins.choices import AssetKind
from twins.models import Asset

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def valve(twin) -> Asset:
    """A one-metric valve watched by a multivariate detector: its detection raises."""
    DetectorConfig.objects.update_or_create(
        asset_kind=AssetKind.VALVE,
        defaults={"detector": "pca_t2q", "params": {}, "calibration_rows": 20})
    return Asset.objects.create(twin=twin, slug="valve-1", name="Valve 1", kind=AssetKind.VALVE,
                                metrics=[{"name": "Pressure", "unit": "bar"}])


@pytest.fixture
def motor(twin) -> Asset:
    """A one-metric motor under the fit-free rolling z-score."""
    DetectorConfig.objects.update_or_create(
        asset_kind=AssetKind.MOTOR,
        defaults={"detector": "zscore", "params": {}, "calibration_rows": 400})
    return Asset.objects.create(twin=twin, slug="motor-1", name="Motor 1", kind=AssetKind.MOTOR,
                                metrics=[{"name": "Temperature", "unit": "°C"}])


def readings(asset: Asset, metric: str, values: np.ndarray) -> list[dict]:
    return [event(asset, T0 + timedelta(seconds=i), {metric: float(v)})
            for i, v in enumerate(values)]


def test_a_failing_asset_does_not_fail_the_request_or_the_other_assets(
        valve, motor, agent_client, admin_client):
    """GIVEN one request with a valve whose detection raises (listed first) and a motor with
    a temperature spike, WHEN it is ingested, THEN the answer is 201, both are stored, the
    motor's spike is an anomaly, and the valve's failure is counted, shown in the ingest
    status and on its asset page."""
    rng = np.random.default_rng(0)
    temperature = 60 + rng.normal(0, 0.5, 90)
    temperature[80:83] = 90.0
    body = (readings(valve, "Pressure", 1.0 + rng.normal(0, 0.01, 30))
            + readings(motor, "Temperature", temperature))
    assert valve.pk < motor.pk  # the failing asset is scored first

    response = agent_client.post("/telemetry/ingest", body, content_type="application/json")

    assert response.status_code == 201, response.content
    assert response.json()["accepted"] == 120
    assert TelemetrySample.objects.filter(asset=valve).count() == 30
    assert TelemetrySample.objects.filter(asset=motor).count() == 90
    spikes = Anomaly.objects.filter(asset=motor, severity="critical")
    assert [(a.metric, a.started_at) for a in spikes] == [("Temperature", T0 + timedelta(
        seconds=80))]
    assert not Anomaly.objects.filter(asset=valve).exists()

    failed = DetectionState.objects.get(asset=valve)
    assert failed.failures == 1
    assert failed.last_error.startswith("ValueError: ")
    assert failed.scored_until is None
    healthy = DetectionState.objects.get(asset=motor)
    assert healthy.failures == 0, healthy.last_error  # its response (consensus) ran cleanly
    assert healthy.scored_until is not None

    status = agent_client.get("/telemetry/ingest/status").json()["detection"]
    assert status["failures"] == 1
    assert [(a["asset"], a["failures"]) for a in status["assets"]] == [("valve-1", 1)]
    assert status["assets"][0]["last_error"] == failed.last_error

    page = admin_client.get("/twins/plant/valve-1/").content.decode()
    assert "Detection failed at" in page and "ValueError: " in page


def test_each_failing_run_is_counted_and_a_retry_is_harmless(valve, agent_client):
    rng = np.random.default_rng(1)
    values = 1.0 + rng.normal(0, 0.01, 50)
    for chunk in (values[:25], values[25:]):
        start = len(TelemetrySample.objects.filter(asset=valve))
        body = [event(valve, T0 + timedelta(seconds=start + i), {"Pressure": float(v)})
                for i, v in enumerate(chunk)]
        response = agent_client.post("/telemetry/ingest", body, content_type="application/json")
        assert response.status_code == 201, response.content
    assert DetectionState.objects.get(asset=valve).failures == 2
    assert TelemetrySample.objects.filter(asset=valve).count() == 50


def test_consensus_lets_multivariate_detectors_abstain_on_a_one_metric_asset(motor):
    """The consensus step fits every detector on the asset: PCA needs two metrics, so it
    abstains (vote None) and the share counts only the detectors that voted."""
    rng = np.random.default_rng(2)
    values = 60 + rng.normal(0, 0.5, 120)
    values[100:105] = 90.0
    TelemetrySample.objects.bulk_create(
        TelemetrySample(asset=motor, metric="Temperature", value=float(v),
                        ts=T0 + timedelta(seconds=i)) for i, v in enumerate(values))
    anomaly = Anomaly(asset=motor, metric="Temperature", detector="zscore", kind="spike",
                      severity="critical", score=1.0, started_at=T0 + timedelta(seconds=100),
                      last_seen_at=T0 + timedelta(seconds=104))
    share, votes = consensus(anomaly, calibration_rows=100)
    assert votes["pca_t2q"] is None
    assert set(votes) == {"zscore", "mad", "ewma", "cusum", "pca_t2q"}
    voters = [v for v in votes.values() if v is not None]
    assert len(voters) == 4 and share == sum(voters) / 4
    assert votes["zscore"] is True
