"""Celery through the real Redis broker with a real (in-process) worker."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from opstwin_site.celery import app as celery_app
from telemetry.models import Anomaly, DetectionState
from telemetry.tasks import detect_anomalies
from tests.fixtures import ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_detection_task_runs_on_a_worker_through_redis(redis_url, pump, monkeypatch):
    X = normal_pump_matrix(200)
    X[150, 3] += 1.0
    monkeypatch.setattr("telemetry.services._enqueue_detection", lambda ids: None)
    ingest_matrix(pump, X)
    monkeypatch.setattr("telemetry.detection._enqueue_responses", lambda ids: None)
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False,
                           result_backend=redis_url)
    try:
        with start_worker(celery_app, queues=["detect"], perform_ping_check=False,
                          pool="solo", loglevel="WARNING"):
            result = detect_anomalies.delay(pump.pk)
            anomaly_ids = result.get(timeout=30)
    finally:
        celery_app.conf.update(broker_url="memory://", result_backend=None)
    assert anomaly_ids == list(Anomaly.objects.filter(severity="critical")
                               .values_list("pk", flat=True))
    assert DetectionState.objects.get(asset=pump).scored_until is not None
