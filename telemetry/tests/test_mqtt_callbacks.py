"""A failing paho callback stops the ingest subscriber loudly instead of stalling it silently.

Before, an exception escaping ``on_message`` ended paho's network thread: the process kept
running and its status said "connected", but it received nothing more and sent no acks, so the
rest of the stream waited in the broker. Real Mosquitto (``MQTT_URL``), real database.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from telemetry import handoff
from telemetry.models import TelemetryEvent
from telemetry.subscriber import IngestSubscriber
from telemetry.tests.harness import wait_for
from tests.fixtures import T0, event
from twins.mqtt import connect_client, make_client

pytestmark = pytest.mark.django_db(transaction=True)


class FailsOnPoison(IngestSubscriber):
    """Fault injection: receiving a message on a ``.../poison/telemetry`` topic raises."""

    def _receive(self, message) -> None:
        if "/poison/" in message.topic:
            raise RuntimeError("injected failure")
        super()._receive(message)


def publish(url: str, topic: str, docs: list) -> None:
    client = make_client(url)
    connect_client(client, url)
    client.loop_start()
    for info in [client.publish(topic, json.dumps(d), qos=1) for d in docs]:
        info.wait_for_publish(timeout=10)
    client.disconnect()
    client.loop_stop()


def test_a_failing_callback_stops_the_subscriber_and_says_why(mqtt_url, pump, monkeypatch):
    """GIVEN a running subscriber, WHEN its message callback raises, THEN it stores and acks
    what it had, stops, and reports the failure (ingest_mqtt then exits non-zero), instead of
    staying "connected" with a dead network thread."""
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    prefix = f"t{uuid.uuid4().hex[:8]}"
    sub = FailsOnPoison(mqtt_url, topic_filter=f"{prefix}/+/+/telemetry", batch_size=50,
                        batch_seconds=0.1)
    sub.start()
    runner = threading.Thread(target=sub.run, daemon=True)
    runner.start()
    assert wait_for(lambda: sub.stats.connected, 10)
    publish(mqtt_url, f"{prefix}/plant/pump-1/telemetry",
            [event(pump, T0, {"Pressure": 1.0})])
    assert wait_for(lambda: TelemetryEvent.objects.count() == 1, 10)
    publish(mqtt_url, f"{prefix}/plant/poison/telemetry", [event(pump, T0, {"Pressure": 2.0})])
    runner.join(timeout=15)
    assert not runner.is_alive()  # run() returned by itself: nobody called stop()
    assert sub.failure == "_on_message: RuntimeError: injected failure"
    assert sub.status()["failure"] == sub.failure
    assert sub.status()["connected"] is False
