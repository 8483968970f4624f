"""Celery through the real Redis broker with a real (in-process) worker."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from opstwin_site.celery import app as celery_app
from telemetry import handoff
from telemetry.models import Anomaly, DetectionState, DetectorConfig
from telemetry.tasks import detect_anomalies
from tests.fixtures import ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_detection_task_runs_on_a_worker_through_redis(redis_url, pump, monkeypatch):
    DetectorConfig.objects.update_or_create(
        asset_kind="generic", defaults={"detector": "zscore", "params": {}})
    pump.kind = "generic"  # watched by the fit-free rolling z-score: no calibration window
    pump.save()
    X = normal_pump_matrix(200)
    X[150, 3] += 1.0
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    ingest_matrix(pump, X)
    monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, [])
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False)
    try:
        with start_worker(celery_app, queues=["detect"], perform_ping_check=False,
                          pool="solo", loglevel="WARNING"):
            detect_anomalies.delay(pump.pk)
            deadline = time.monotonic() + 30
            while not DetectionState.objects.filter(asset=pump, scored_until__isnull=False) \
                    .exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        celery_app.conf.update(broker_url="memory://")
    assert DetectionState.objects.get(asset=pump).scored_until is not None
    assert Anomaly.objects.filter(asset=pump, severity="critical").count() == 1
