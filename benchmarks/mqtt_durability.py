"""MQTT durability: QoS 1 events through SIGKILLs of the real ingest subscriber, counted in
PostgreSQL.

Setup (private, removed at the end): a scratch database, and a Mosquitto started on ``--port``
with the settings of ``docker/mosquitto.conf`` (the listener, the data folder and the user are
replaced, and the container's password file and ACL left out: anonymous on 127.0.0.1;
``--broker-defaults`` runs Mosquitto's own defaults instead, to show what they lose). Each run
gets its own twin (four pump assets), topic prefix and ingest client id, and a fresh
``manage.py ingest_mqtt --client-id`` subprocess (persistent MQTT v5 session).

A QoS 1 publisher (MQTT v5, its own network thread) offers ``--events`` SKAB-shaped events at
``--rate`` per second and, like a real device, sends a message again when the broker refuses
it (a PUBACK reason code >= 0x80, or 0x10 "no matching subscribers"); messages in flight over
a lost connection are re-sent by paho itself. Two kinds of run:

- *no-kill*: the subscriber runs throughout;
- *kill*: the subscriber is ``SIGKILL``ed at 1/3 and 2/3 of the stream and started again after
  ``--down`` seconds (2) with the same client id; the broker holds its session meanwhile.

After the last PUBACK the run waits until every event is stored or nothing changed for
``--settle`` seconds, then counts: *lost* = events PUBACKed but not in the database; *stored
twice* = samples beyond 8 per stored event (``event_id`` de-duplication failing); *redelivered*
= events the subscriber saw again and dropped as duplicates (expected after a kill: messages
committed but not yet acknowledged). A progress line is printed every ``--progress`` seconds.

Exit status 1 when any run lost an event or stored one twice.

Run: ``python benchmarks/mqtt_durability.py [--runs 10 --events 4000 --kill-events 8000
--rate 400]`` (defaults: 10 no-kill runs of 4,000 events and 10 kill runs of 8,000 events, all
at 400 events/s; about 10 minutes on two shared cores; needs the ``mosquitto`` binary).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import REPO, bench_database, make_assets, setup_django  # noqa: E402

REFUSED = 0x10  # MQTT v5 PUBACK "No matching subscribers": the broker did not keep it


def broker_config(port: int, data_dir: Path, *, defaults: bool = False) -> str:
    """docker/mosquitto.conf for a private broker: listener, data folder and user replaced, the
    container's password file and ACL left out (anonymous clients on 127.0.0.1 only).

    ``defaults``: only a listener (Mosquitto's defaults, e.g. ``max_queued_messages 1000``).
    Mosquitto started as root drops to user ``mosquitto``, which could not write our data
    folder: it runs as whoever we are.
    """
    user = pwd.getpwuid(os.getuid()).pw_name
    head = f"user {user}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
    if defaults:
        return head
    replaced = r"\s*(listener|persistence_location|user|allow_anonymous|password_file|acl_file)\b"
    keep = [line for line in (REPO / "docker" / "mosquitto.conf").read_text().splitlines()
            if not re.match(replaced, line)]
    return head + f"persistence_location {data_dir}/\n" + "\n".join(keep) + "\n"


class Broker:
    """A private Mosquitto on ``port`` with ``config`` (see ``broker_config``)."""

    def __init__(self, workdir: Path, port: int, *, defaults: bool) -> None:
        (workdir / "mosquitto-data").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(broker_config(port, workdir / "mosquitto-data",
                                             defaults=defaults))
        self.log = workdir / "mosquitto.log"
        self.url = f"mqtt://127.0.0.1:{port}"
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)],
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        from telemetry.tests.harness import wait_for

        if not wait_for(self._listening, 10):
            self.stop()
            raise SystemExit(f"mosquitto did not start on port {port}; see {self.log}")

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), 0.5):
                return True
        except OSError:
            return self.process.poll() is not None  # exited: stop waiting, report below

    def drops(self) -> int:
        """How many "Outgoing messages are being dropped" notices the broker logged."""
        return self.log.read_text(errors="replace").count("messages are being dropped")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class Publisher:
    """QoS 1 publisher that re-sends what the broker refused, as a real device would.

    ``acked`` counts PUBACKs with a success reason; ``resent`` counts messages sent again.
    """

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"durability-pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._by_mid: dict[int, tuple[str, bytes]] = {}
        self._early: dict[int, int] = {}
        self._refused: list[tuple[str, bytes]] = []
        self.acked = self.resent = 0
        port = int(url.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        # Called on paho's network thread with its lock held: only record here.
        with self._lock:
            item = self._by_mid.pop(mid, None)
            if item is None:
                self._early[mid] = reason_code.value
            else:
                self._settle(item, reason_code.value)

    def _settle(self, item: tuple[str, bytes], code: int) -> None:
        if code >= 0x80 or code == REFUSED:
            self._refused.append(item)
        else:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._by_mid[info.mid] = (topic, payload)
            else:
                self._settle((topic, payload), early)

    def resend_refused(self) -> None:
        with self._lock:
            due, self._refused = self._refused, []
        for topic, payload in due:
            self.resent += 1
            self.publish(topic, payload)

    def outstanding(self) -> int:
        with self._lock:
            return len(self._by_mid) + len(self._refused)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Run:
    """Figures of one run."""

    kind: str
    events: int
    acked: int = 0
    stored: int = 0
    stored_twice: int = 0
    redelivered: int = 0
    resent: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.events - self.stored


class Durability:
    """Runs of one kind against one broker and one database (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, broker: Broker, database: str,
                 workdir: Path) -> None:
        self.args, self.broker, self.database, self.workdir = args, broker, database, workdir
        self.runs = 0

    def run(self, kind: str, events: int) -> Run:
        from telemetry.tests.harness import IngestProcess, replay_messages

        self.runs += 1
        name = f"dur{self.runs}-{uuid.uuid4().hex[:6]}"
        assets = make_assets(name, 4)
        prefix = f"opstwin-{name}"
        messages = replay_messages(name, [a.slug for a in assets], events, prefix=prefix)
        ingest = IngestProcess(self.workdir, url=self.broker.url, database=self.database,
                               client_id=f"ingest-{name}", prefix=prefix)
        result, publisher = Run(kind, events), None
        ingest.start()
        try:
            ingest.wait_connected(60)
            started = time.monotonic()
            publisher = Publisher(self.broker.url)
            self._publish(kind, messages, publisher, ingest, result, assets)
            self._settle(publisher, ingest, result, assets)
        finally:
            if publisher is not None:
                publisher.close()
            ingest.stop()
        result.redelivered += ingest.status().get("duplicates", 0)
        result.resent, result.acked = publisher.resent, publisher.acked
        result.seconds = time.monotonic() - started
        return result

    def _publish(self, kind, messages, publisher, ingest, result, assets) -> None:
        n, rate = len(messages), self.args.rate
        kills = {n // 3, 2 * n // 3} if kind == "kill" else set()
        started, last = time.monotonic(), time.monotonic()
        for i, (topic, payload, _) in enumerate(messages):
            if i in kills:
                result.redelivered += ingest.status().get("duplicates", 0)
                ingest.kill()
                threading.Timer(self.args.down, ingest.start).start()
            publisher.publish(topic, payload)
            if i % 200 == 0:
                publisher.resend_refused()
            if time.monotonic() - last >= self.args.progress:
                last = time.monotonic()
                self._progress(f"published {i + 1:,}/{n:,}", publisher, ingest, assets)
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)

    def _settle(self, publisher, ingest, result, assets) -> None:
        """Wait for every PUBACK, then until all are stored or nothing changes for a while."""
        deadline = time.monotonic() + 120
        while publisher.outstanding() and time.monotonic() < deadline:
            publisher.resend_refused()
            time.sleep(0.2)
        if publisher.outstanding():
            result.notes.append(f"{publisher.outstanding()} never PUBACKed")
        last_count, changed, last_line = -1, time.monotonic(), 0.0
        while True:
            stored = self._stored(assets)[0]
            # A subscriber still starting (Django takes seconds on a loaded machine) is no sign
            # that the stream has ended: only an idle, connected one is.
            if stored != last_count or not ingest.status().get("connected"):
                last_count, changed = stored, time.monotonic()
            if stored >= result.events or time.monotonic() - changed > self.args.settle:
                break
            if time.monotonic() - last_line >= self.args.progress:
                last_line = time.monotonic()
                self._progress("settling", publisher, ingest, assets)
            time.sleep(0.5)
        result.stored, samples = self._stored(assets)
        result.stored_twice = max(0, samples - 8 * result.stored) // 8
        if result.lost:
            status = ingest.status()
            result.notes.append(f"subscriber received {status.get('received')} committed "
                                f"{status.get('committed')} connected {status.get('connected')}")

    def _stored(self, assets) -> tuple[int, int]:
        from telemetry.models import TelemetryEvent, TelemetrySample

        return (TelemetryEvent.objects.filter(asset__in=assets).count(),
                TelemetrySample.objects.filter(asset__in=assets).count())

    def _progress(self, what: str, publisher, ingest, assets) -> None:
        status = ingest.status()
        state = "up" if ingest.alive and status.get("connected") else (
            "starting" if ingest.alive else "killed")
        print(f"    {what}: PUBACKed {publisher.acked:,}, stored {self._stored(assets)[0]:,}, "
              f"subscriber {state}", flush=True)


def report(results: list[Run], broker: Broker) -> bool:
    """Print one line per run and a summary per kind; True when nothing was lost."""
    print("\nrun  kind     events  PUBACKed  stored  lost  stored twice  redelivered  resent  "
          "seconds")
    for i, r in enumerate(results, 1):
        print(f"{i:>3}  {r.kind:<7} {r.events:>7,} {r.acked:>9,} {r.stored:>7,} {r.lost:>5,} "
              f"{r.stored_twice:>13,} {r.redelivered:>12,} {r.resent:>7,} {r.seconds:>8.1f}"
              + (f"  ({'; '.join(r.notes)})" if r.notes else ""))
    print()
    for kind in ("no-kill", "kill"):
        runs = [r for r in results if r.kind == kind]
        if runs:
            print(f"{kind}: {len(runs)} runs, {sum(r.events for r in runs):,} events, "
                  f"lost {sum(r.lost for r in runs):,} (runs with loss: "
                  f"{sum(1 for r in runs if r.lost)}), stored twice "
                  f"{sum(r.stored_twice for r in runs):,}, redelivered "
                  f"{sum(r.redelivered for r in runs):,}")
    print(f"broker 'messages are being dropped' notices: {broker.drops()}")
    return all(r.lost == 0 and r.stored_twice == 0 for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each kind")
    parser.add_argument("--events", type=int, default=4000, help="events per no-kill run")
    parser.add_argument("--kill-events", type=int, default=8000, help="events per kill run")
    parser.add_argument("--rate", type=float, default=400.0, help="events per second")
    parser.add_argument("--down", type=float, default=2.0, help="seconds a killed one is down")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="stop waiting after this many seconds without a new row")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between lines")
    parser.add_argument("--port", type=int, default=18830, help="port of the private broker")
    parser.add_argument("--kinds", default="no-kill,kill", help="which kinds to run")
    parser.add_argument("--broker-defaults", action="store_true",
                        help="Mosquitto's defaults instead of docker/mosquitto.conf")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the broker, the subscriber and the database go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="opstwin-durability-"))
    broker = Broker(workdir, args.port, defaults=args.broker_defaults)
    print(f"broker: mosquitto on {broker.url} with "
          f"{'its defaults' if args.broker_defaults else 'docker/mosquitto.conf'}; "
          f"logs in {workdir}", flush=True)
    results: list[Run] = []
    try:
        with bench_database("durability") as database:
            setup_django(database)
            bench = Durability(args, broker, database, workdir)
            for kind in kinds:
                events = args.events if kind == "no-kill" else args.kill_events
                for i in range(args.runs):
                    print(f"{kind} run {i + 1}/{args.runs}: {events:,} events at "
                          f"{args.rate:,.0f}/s", flush=True)
                    results.append(bench.run(kind, events))
                    r = results[-1]
                    print(f"  lost {r.lost}, stored twice {r.stored_twice}, redelivered "
                          f"{r.redelivered}, {r.seconds:.1f}s", flush=True)
            from django.db import connections

            connections.close_all()
    finally:
        broker.stop()
    return 0 if report(results, broker) else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
