"""What the broker's queue limit does to a persistent ingest session, on a private Mosquitto.

Each test starts its own broker (never the shared one) with ``sys_interval 1`` so its ``$SYS``
counters arrive within a second, and runs the real ``IngestSubscriber`` against the suite's
database. Needs the ``mosquitto`` binary: skips without it, fails with
``OPSTWIN_REQUIRE_SERVICES=1`` (as in CI).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from telemetry import handoff
from telemetry.models import TelemetryEvent
from telemetry.subscriber import IngestSubscriber
from telemetry.tests.harness import REPO, free_port, wait_for
from tests.fixtures import T0, event, missing

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
PUBLISHED = 1_200  # Mosquitto's default max_queued_messages is 1,000
PORTS = range(18834, 18840)  # this machine's range for such brokers; any free port elsewhere
LEFT_OUT = r"\s*(listener|persistence_location|user|allow_anonymous|password_file|acl_file)\b"


def _port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def _broker(tmp_path: Path, *, opstwin_settings: bool, port: int | None = None):
    """Start Mosquitto with its defaults or with docker/mosquitto.conf's settings."""
    if shutil.which("mosquitto") is None:
        missing("the mosquitto binary is not installed")
    port = port or _port()
    user = pwd.getpwuid(os.getuid()).pw_name
    config = f"user {user}\nlistener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n"
    if opstwin_settings:
        (tmp_path / "data").mkdir()
        product = (REPO / "docker" / "mosquitto.conf").read_text().splitlines()
        config += f"persistence_location {tmp_path / 'data'}/\n" + "\n".join(
            line for line in product if not re.match(LEFT_OUT, line)) + "\n"
    (tmp_path / "mosquitto.conf").write_text(config)
    process = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
                               stdout=(tmp_path / "mosquitto.log").open("wb"),
                               stderr=subprocess.STDOUT)

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    assert wait_for(listening, 10), (tmp_path / "mosquitto.log").read_text()
    return process, f"mqtt://127.0.0.1:{port}"


@pytest.fixture
def default_broker(tmp_path):
    process, url = _broker(tmp_path, opstwin_settings=False)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def opstwin_broker(tmp_path):
    process, url = _broker(tmp_path, opstwin_settings=True)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_detection(monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])


class Session:
    """One ``IngestSubscriber`` run with a fixed client id and status file, on a thread."""

    def __init__(self, url: str, prefix: str, status_path: Path) -> None:
        self.subscriber = IngestSubscriber(
            url, topic_filter=f"{prefix}/+/+/telemetry", batch_size=200, batch_seconds=0.1,
            client_id=f"ingest-limits-{prefix}", status_path=status_path, session_expiry=600)
        self.subscriber.start()
        self.thread = threading.Thread(target=self.subscriber.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.subscriber.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def publish(url: str, topic: str, docs: list[dict]) -> list[int]:
    """Publish ``docs`` at QoS 1 and return each PUBACK's reason code."""
    codes: dict[int, int] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_publish = lambda _c, _u, mid, reason, _p: codes.__setitem__(mid, reason.value)
    client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.loop_start()
    infos = [client.publish(topic, json.dumps(doc), qos=1) for doc in docs]
    for info in infos:
        info.wait_for_publish(timeout=10)
    client.disconnect()
    client.loop_stop()
    return [codes.get(info.mid, -1) for info in infos]


def drained(subscriber: IngestSubscriber, quiet: float = 1.0) -> bool:
    """Everything received is committed, nothing new for ``quiet`` s, and $SYS was read."""
    stats = subscriber.stats
    if stats.received == 0 or stats.received != stats.committed \
            or subscriber.broker.dropped is None:
        return False
    received = stats.received
    time.sleep(quiet)
    return stats.received == received


def go_down_publish_and_return(url: str, tmp_path: Path, pump,
                               dropped: int) -> IngestSubscriber:
    """GIVEN a persistent ingest session, WHEN it is down while PUBLISHED events are published
    (each PUBACKed "Success") and it then comes back with its client id, THEN return it after
    it has stored what the broker kept and read the broker's drop count as ``dropped``.

    The count arrives with the broker's next ``$SYS`` update (every second): the retained value
    delivered at subscription time may still be the one from before the drops, so the wait is
    for the expected count (or 20 s, after which the caller's assertions fail)."""
    prefix = f"lim{uuid.uuid4().hex[:8]}"
    status_path = tmp_path / "ingest.json"
    first = Session(url, prefix, status_path)
    assert wait_for(lambda: first.subscriber.broker.dropped is not None, 10)
    first.stop()
    docs = [event(pump, T0 + timedelta(seconds=i), {"Pressure": float(i)})
            for i in range(PUBLISHED)]
    codes = publish(url, f"{prefix}/plant/pump-1/telemetry", docs)
    assert codes == [0] * PUBLISHED  # every one PUBACKed with reason "Success"
    second = Session(url, prefix, status_path)
    try:
        wait_for(lambda: drained(second.subscriber)
                 and second.subscriber.broker.dropped == dropped, 20, every=0.2)
    finally:
        second.stop()
    return second.subscriber


def test_a_broker_with_the_default_queue_limit_drops_what_a_down_subscriber_misses(
    default_broker, tmp_path, pump, caplog
):
    caplog.set_level(logging.WARNING, logger="telemetry.subscriber")
    subscriber = go_down_publish_and_return(default_broker, tmp_path, pump,
                                            dropped=PUBLISHED - 1_000)
    assert TelemetryEvent.objects.count() == 1_000  # max_queued_messages
    assert subscriber.broker.dropped == PUBLISHED - 1_000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has dropped 200 messages" in w and "max_queued_messages" in w for w in warnings)
    assert subscriber.status()["broker"]["warnings"][-1][1].startswith(
        "the broker has dropped 200 messages")


def test_with_the_products_broker_settings_a_down_subscriber_misses_nothing(
    opstwin_broker, tmp_path, pump, caplog
):
    caplog.set_level(logging.WARNING, logger="telemetry.subscriber")
    subscriber = go_down_publish_and_return(opstwin_broker, tmp_path, pump, dropped=0)
    assert TelemetryEvent.objects.count() == PUBLISHED
    assert subscriber.broker.dropped == 0
    assert subscriber.broker.session_present is True
    assert subscriber.broker.warnings == []


def test_a_subscriber_warns_when_the_broker_forgot_its_session(tmp_path, caplog):
    """GIVEN a persistent ingest session on a broker without persistence, WHEN the broker
    restarts while the subscriber is down, THEN the subscriber, back with its client id, finds
    no session and warns that what was published meanwhile is lost."""
    caplog.set_level(logging.WARNING, logger="telemetry.subscriber")
    prefix, status_path = f"lim{uuid.uuid4().hex[:8]}", tmp_path / "ingest.json"
    process, url = _broker(tmp_path, opstwin_settings=False)
    try:
        first = Session(url, prefix, status_path)
        assert wait_for(lambda: first.subscriber.broker.session_present is False, 10)
        first.stop()
        assert first.subscriber.broker.warnings == []  # a first connection has no session yet
        process.terminate()
        process.wait(timeout=10)
        process, url = _broker(tmp_path, opstwin_settings=False, port=int(url.rsplit(":", 1)[1]))
        second = Session(url, prefix, status_path)
        assert wait_for(lambda: second.subscriber.broker.session_present is not None, 10)
        second.stop()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert second.subscriber.broker.session_present is False
    assert "no longer had this subscriber's session" in second.subscriber.broker.warnings[-1][1]
    assert any("no longer had" in r.getMessage() for r in caplog.records)
