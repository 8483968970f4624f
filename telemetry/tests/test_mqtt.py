"""The ingest subscriber against the real Mosquitto broker."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from telemetry import handoff
from telemetry.models import DeadLetter, TelemetrySample
from telemetry.subscriber import IngestSubscriber
from tests.fixtures import T0, event
from twins.mqtt import connect_client, make_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def subscriber(mqtt_url, settings):
    prefix = f"t{uuid.uuid4().hex[:8]}"  # private topic space per test run
    settings.MQTT_TOPIC_PREFIX = prefix
    sub = IngestSubscriber(mqtt_url, topic_filter=f"{prefix}/+/+/telemetry", batch_size=50,
                           batch_seconds=0.1)
    sub.start()
    thread = threading.Thread(target=sub.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    yield sub, prefix
    sub.stop()
    thread.join(timeout=10)


def publish(url: str, topic: str, payloads: list) -> None:
    client = make_client(url)
    connect_client(client, url)
    client.loop_start()
    infos = [client.publish(topic, p if isinstance(p, bytes) else json.dumps(p), qos=1)
             for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_events_published_over_mqtt_become_rows(subscriber, mqtt_url, pump, monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    sub, prefix = subscriber
    docs = [event(pump, T0.replace(second=i), {"Pressure": float(i), "Current": 1.0})
            for i in range(20)]
    publish(mqtt_url, f"{prefix}/plant/pump-1/telemetry", docs)
    assert wait_until(lambda: TelemetrySample.objects.filter(asset=pump).count() == 40)
    assert sub.stats.accepted == 20
    assert set(TelemetrySample.objects.filter(metric="Pressure").values_list("value", flat=True)) \
        == {float(i) for i in range(20)}


def test_a_bad_payload_lands_in_the_dead_letter_table_and_the_subscriber_lives_on(
    subscriber, mqtt_url, pump, monkeypatch
):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    sub, prefix = subscriber
    topic = f"{prefix}/plant/pump-1/telemetry"
    publish(mqtt_url, topic, [b"\xff\xfe not json", {"event_id": "1"}])
    assert wait_until(lambda: DeadLetter.objects.count() == 2)
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert reasons[0].startswith("invalid JSON") and "telemetry.v1" in reasons[1]
    publish(mqtt_url, topic, [event(pump, T0, {"Pressure": 2.0})])
    assert wait_until(lambda: TelemetrySample.objects.count() == 1)
    assert sub.stats.rejected == 2


def test_the_subscriber_acks_only_after_commit(subscriber, mqtt_url, pump, monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])
    sub, prefix = subscriber
    acked = []
    original = sub.client.ack

    def spy(mid, qos):
        acked.append(TelemetrySample.objects.count())
        return original(mid, qos)

    monkeypatch.setattr(sub.client, "ack", spy)
    publish(mqtt_url, f"{prefix}/plant/pump-1/telemetry", [event(pump, T0, {"Pressure": 3.0})])
    assert wait_until(lambda: acked)
    assert acked[0] == 1  # the row was committed (visible to another connection) before the ack
    assert mqtt.MQTTv5 == sub.client.protocol
