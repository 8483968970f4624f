"""The demo on the embedded default is quiet and tidy (issue 10, item 1).

Progress lines instead of bars when stdout is not a terminal; the broker line says when the
broker is the embedded one; the demo's subscriber writes its status where the status page
reads it; tests keep status files out of the project folder; the replay never runs more than a
window ahead of the subscriber's commits; the subscriber acks without waiting for detection;
the embedded PostgreSQL is stopped by the process that started it, and only by that one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings

from demo import runner
from demo.management.commands.demo import Command
from demo.replay import AckWindow, publish_runs
from demo.skab import SkabRun
from opstwin_site.broker import EmbeddedBroker
from telemetry import handoff
from telemetry.subscriber import IngestSubscriber
from tests.fixtures import T0, event
from twins.mqtt import connect_client, make_client

# Ports of this file's embedded brokers (the demo helper's range is 18840-18849).
BROKER_PORT, REPLAY_PORT, INGEST_PORT = 18842, 18843, 18844


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def embedded_broker():
    brokers = []

    def start(port: int) -> str:
        broker = EmbeddedBroker(port=port)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.stop()


# --- progress ----------------------------------------------------------------------------------
def test_progress_prints_lines_when_not_a_terminal():
    lines: list[str] = []
    with runner.Progress("published", total=300, tty=False, write=lines.append, every=0) as p:
        for _ in range(3):
            p.update(100)
    assert len(lines) == 4  # one per update, one at close
    assert lines[0].startswith("published: 100/300 ev (33%)")
    assert lines[-1].startswith("published: 300/300 ev (100%)")
    assert not any("\r" in line or "█" in line for line in lines)


def test_progress_lines_are_spaced_by_the_interval_of_a_clock():
    now = [0.0]
    lines: list[str] = []
    progress = runner.Progress("committed", total=10, tty=False, write=lines.append, every=5.0,
                             clock=lambda: now[0])
    for second in range(1, 11):  # one update a second for ten seconds
        now[0] = float(second)
        progress.update()
    progress.close()
    assert [line.split(",")[0] for line in lines] == [
        "committed: 5/10 ev (50%)", "committed: 10/10 ev (100%)", "committed: 10/10 ev (100%)"]


def test_progress_of_a_wait_shows_its_note():
    lines: list[str] = []
    with runner.Progress("detection up to date", total=34, unit="assets", tty=False,
                       write=lines.append, every=0) as progress:
        progress.set(12, "anomalies 3, simulations 1, proposals 1")
    assert lines[0].startswith("detection up to date: 12/34 assets (35%)")
    assert lines[0].endswith("; anomalies 3, simulations 1, proposals 1")


def test_the_demo_command_prints_progress_lines_to_a_stdout_that_is_not_a_terminal():
    out = StringIO()
    command = Command(stdout=out)
    with command._progress("published", total=200, every=0) as progress:
        progress.update(100)
        progress.update(100)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("published: 100/200 ev (50%)")
    assert lines[-1].startswith("published: 200/200 ev (100%)")


# --- the broker line ---------------------------------------------------------------------------
def test_the_broker_line_says_embedded_when_the_demo_starts_the_broker(settings):
    settings.MQTT_URL = None
    broker = runner.start_broker(BROKER_PORT)
    try:
        assert broker.describe() == (f"MQTT broker: mqtt://127.0.0.1:{BROKER_PORT}?protocol=311"
                                     " (embedded amqtt)")
        assert broker.url == settings.MQTT_URL  # the demo process publishes there too
        client = make_client(broker.url)
        connect_client(client, broker.url)  # it is a real broker
        client.disconnect()
    finally:
        broker.stop()


def test_the_broker_line_names_a_configured_broker_without_embedded(settings):
    settings.MQTT_URL = "mqtt://broker.example:1883"
    broker = runner.start_broker(BROKER_PORT)
    assert broker.embedded is None
    assert broker.describe() == "MQTT broker: mqtt://broker.example:1883"


# --- ingest status files -----------------------------------------------------------------------
def test_the_demo_subscriber_writes_its_status_where_the_status_page_reads(settings, tmp_path):
    settings.INGEST_STATUS_DIR = tmp_path
    assert runner.ingest_status_path().parent == tmp_path
    runner.ingest_status_path().write_text(json.dumps({"committed": 42}))
    assert runner.subscriber_committed() == 42


def test_tests_write_ingest_status_files_outside_the_project():
    project_data = Path(django_settings.BASE_DIR) / ".opstwin"
    status_dir = Path(django_settings.INGEST_STATUS_DIR).resolve()
    assert not status_dir.is_relative_to(project_data.resolve())
    subscriber = IngestSubscriber("mqtt://127.0.0.1:1", topic_filter="x/#")
    assert subscriber.status_path.parent.resolve() == status_dir


# --- flow control: replay -> broker -> subscriber ----------------------------------------------
def _run(n: int) -> SkabRun:
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(n).astype("timedelta64[s]")
    return SkabRun(name="valve1/0.csv", ts=ts, X=np.ones((n, 8)), labels=None)


def test_the_replay_never_runs_more_than_a_window_ahead_of_the_commits(embedded_broker,
                                                                       settings):
    """A consumer that commits slowly: what it holds un-committed never exceeds the window."""
    url = embedded_broker(REPLAY_PORT)
    settings.MQTT_TOPIC_PREFIX = "flow"
    received, committed, worst = [0], [0], [0]

    def on_message(_client, _userdata, _message):
        received[0] += 1
        worst[0] = max(worst[0], received[0] - committed[0])

    consumer = make_client(url)
    consumer.on_message = on_message
    connect_client(consumer, url)
    consumer.subscribe("flow/#", qos=1)
    consumer.loop_start()
    time.sleep(0.5)  # SUBACK

    def acked() -> int:  # commits at most 20 more messages per look, never unseen ones
        committed[0] = min(received[0], committed[0] + 20)
        return committed[0]

    try:
        window = AckWindow(acked, floor=50, ceiling=50, initial=50)  # a fixed window of 50
        sent = publish_runs(url, "plant", [_run(400)], rate=100_000, window=window, poll=0.001)
        assert wait_until(lambda: received[0] == 400)
    finally:
        consumer.loop_stop()
        consumer.disconnect()
    assert sent == 400
    assert 20 < worst[0] <= 50  # without flow control: 400, all of them


def test_the_replay_stops_when_the_consumer_dies(embedded_broker, settings):
    url = embedded_broker(REPLAY_PORT)
    settings.MQTT_TOPIC_PREFIX = "flow"

    calls = [0]

    def acked() -> int:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("ingest exited with 1")
        return 0

    with pytest.raises(RuntimeError, match="ingest exited"):
        publish_runs(url, "plant", [_run(100)], rate=100_000,
                     window=AckWindow(acked, floor=10, ceiling=10, initial=10))


def test_the_window_is_what_a_busy_consumer_commits_in_the_target_lag():
    now, committed = [0.0], [0]
    window = AckWindow(lambda: committed[0], target_lag=1.5, floor=50, ceiling=5000,
                       initial=200, clock=lambda: now[0])
    sent = 2000  # far ahead: the consumer is busy all along
    for second in range(1, 11):  # it commits 120 messages a second
        now[0], committed[0] = float(second), 120 * second
        window.read(sent)
    assert window.size == 180  # 120/s for 1.5 s
    assert window.full(sent)


def test_the_window_grows_while_the_consumer_keeps_up():
    now, committed = [0.0], [0]
    window = AckWindow(lambda: committed[0], floor=50, ceiling=1000, initial=100,
                       clock=lambda: now[0])
    for sent in (100, 200, 400, 800, 1600):
        now[0] += 1.0
        committed[0] = sent  # all of it committed by the next look
        window.read(sent)
    assert window.size == 1000  # doubled each time, up to the ceiling
    assert not window.full(1600)


@pytest.mark.django_db(transaction=True)
def test_the_subscriber_acks_without_waiting_for_detection(embedded_broker, settings, pump,
                                                           monkeypatch):
    """Detection blocked: batches still commit and are acked (the broker gets its PUBACKs in
    time); the blocked assets coalesce and run once released."""
    url = embedded_broker(INGEST_PORT)
    settings.MQTT_TOPIC_PREFIX = "acks"
    release, detected = threading.Event(), []

    def slow_detection(asset_ids):
        release.wait(60)
        detected.append(list(asset_ids))

    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, slow_detection)
    sub = IngestSubscriber(url, topic_filter="acks/+/+/telemetry", batch_size=10,
                           batch_seconds=0.05)
    sub.start()
    runner = threading.Thread(target=sub.run, daemon=True)
    runner.start()
    try:
        assert wait_until(lambda: sub.stats.connected)
        time.sleep(0.5)  # SUBACK
        publisher = make_client(url)
        connect_client(publisher, url)
        publisher.loop_start()
        infos = [publisher.publish(f"acks/{pump.twin.slug}/{pump.slug}/telemetry",
                                   json.dumps(event(pump, T0.replace(second=i),
                                                    {"Pressure": 1.0})), qos=1)
                 for i in range(50)]
        for info in infos:
            info.wait_for_publish(timeout=10)
        publisher.loop_stop()
        publisher.disconnect()
        # Before the fix the first batch's detection blocked the commit loop here.
        assert wait_until(lambda: sub.stats.committed == 50)
        assert detected == []  # still blocked, yet everything is committed and acked
    finally:
        release.set()
        sub.stop()
        runner.join(timeout=20)
    assert detected and all(ids == [pump.pk] for ids in detected)
    assert len(detected) < 5  # 5 batches, coalesced while the first one was blocked


# --- the embedded PostgreSQL: stop what you start -------------------------------------------
OWNER = textwrap.dedent("""
    import json, subprocess, sys
    from pathlib import Path
    from opstwin_site import embedded

    data = Path(sys.argv[1])
    embedded.embedded_database_url(data)
    joiner = subprocess.run([sys.executable, "-c", sys.argv[2], str(data)], check=True,
                            capture_output=True, text=True).stdout
    print(json.dumps({"started_here": embedded.started_here(), "joiner": json.loads(joiner),
                      "stopped": embedded.stop_embedded_database(),
                      "stopped_again": embedded.stop_embedded_database()}))
""")
JOINER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from opstwin_site import embedded

    embedded.embedded_database_url(Path(sys.argv[1]))
    print(json.dumps({"started_here": embedded.started_here(),
                      "stopped": embedded.stop_embedded_database()}))
""")


def _postgres_serving(folder: Path) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(folder) in " ".join(p.info["cmdline"] or [])]


def test_the_process_that_starts_the_embedded_postgres_stops_it_and_joiners_do_not():
    folder = Path(tempfile.mkdtemp(prefix="opstwin-embedded-"))
    try:
        result = subprocess.run([sys.executable, "-c", OWNER, str(folder), JOINER],
                                capture_output=True, text=True, timeout=120,
                                cwd=django_settings.BASE_DIR)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report == {"started_here": True, "stopped": True, "stopped_again": False,
                          "joiner": {"started_here": False, "stopped": False}}
        assert wait_until(lambda: not _postgres_serving(folder), timeout=10)
    finally:
        for pid in _postgres_serving(folder):  # only if the test failed: our own server
            subprocess.run(["kill", str(pid)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
