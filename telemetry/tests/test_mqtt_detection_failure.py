"""The durability run's tail loss (issue 10, item 8), reproduced: detection failing inside the
subscriber's commit must never end ingest.

With eager Celery (no ``REDIS_URL``: the embedded default, the demo, a subscriber started without
the variable) detection runs inside the subscriber's process, after each batch commits. Before,
an exception there (seen: PCA fitted on a one-metric asset in the consensus step) escaped the
commit hook and ended ``ingest_mqtt``: that batch was stored but never acked and everything after
it stayed in the broker, so a 4,000-event run at 400/s stored 2,481 (the tail "lost"), the status
file froze at 2,555 received, and a restart crashed again at the next batch. The fault is
injected here at the detection function, since the one-metric PCA case itself no longer raises.
Real Mosquitto (``MQTT_URL``), real database.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest

from telemetry.models import TelemetryEvent
from telemetry.subscriber import IngestSubscriber
from telemetry.tests.harness import wait_for
from tests.fixtures import T0, event
from twins.mqtt import connect_client, make_client

pytestmark = pytest.mark.django_db(transaction=True)
EVENTS = 300


def test_ingest_stores_and_acks_everything_while_detection_keeps_failing(
    mqtt_url, pump, monkeypatch
):
    """GIVEN a subscriber whose detection raises for every batch (eager Celery), WHEN 300
    events arrive over MQTT, THEN all 300 are stored and acked, and the subscriber still runs."""
    calls = []

    def failing_detection(asset_id, *args, **kwargs):
        calls.append(asset_id)
        raise ValueError("injected detection failure")

    monkeypatch.setattr("telemetry.detection.detect_anomalies", failing_detection)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    sub = IngestSubscriber(mqtt_url, topic_filter=f"{prefix}/+/+/telemetry", batch_size=50,
                           batch_seconds=0.1)
    sub.start()
    runner = threading.Thread(target=sub.run, daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: sub.stats.connected, 10)
        client = make_client(mqtt_url)
        connect_client(client, mqtt_url)
        client.loop_start()
        infos = [client.publish(f"{prefix}/plant/pump-1/telemetry",
                                json.dumps(event(pump, T0 + timedelta(seconds=i),
                                                 {"Pressure": 1.0 + i % 7})), qos=1)
                 for i in range(EVENTS)]
        for info in infos:
            info.wait_for_publish(timeout=10)
        client.disconnect()
        client.loop_stop()
        assert wait_for(lambda: sub.stats.committed == EVENTS, 30)
        assert TelemetryEvent.objects.count() == EVENTS
        assert calls  # detection did run, and failed
        assert runner.is_alive()
        assert sub.failure is None
    finally:
        sub.stop()
        runner.join(timeout=15)
