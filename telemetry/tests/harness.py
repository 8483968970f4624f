"""Real processes for reliability tests and ingest benchmarks: a private Mosquitto, ingest
subprocesses, a cuttable TCP proxy in front of PostgreSQL, and a QoS 1 publisher.

Nothing here touches the system Mosquitto: ``Mosquitto`` starts its own broker on a free port
with a config in a temp dir (persistence on, large in-flight window and queues), so it can be
restarted at will.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from twins.env import database_url_of

REPO = Path(__file__).resolve().parents[2]
SKAB_METRICS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
                "Thermocouple", "Voltage", "Volume Flow RateRMS"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll ``predicate`` until true (returns True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


class Mosquitto:
    """A private Mosquitto broker (persistence on) that can be restarted on the same port."""

    def __init__(self, workdir: Path, *, max_inflight: int = 1000) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        data = workdir / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        # Started as root, Mosquitto drops to user "mosquitto" and then cannot save its
        # persistence file in our temp dir: run it as whoever we are.
        user = pwd.getpwuid(os.getuid()).pw_name
        self.config.write_text(
            f"user {user}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nautosave_interval 0\n"
            f"max_inflight_messages {max_inflight}\nmax_queued_messages 1000000\n"
            "max_queued_bytes 0\nset_tcp_nodelay true\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        if not wait_for(self._listening, 10):
            raise RuntimeError(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file, then exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self, down_for: float = 0.5) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def database_url(settings_dict: dict, *, host: str | None = None,
                 port: int | None = None) -> str:
    """``postgres://`` URL of a Django DATABASES entry (optionally through another host/port)."""
    return database_url_of(settings_dict, host=host, port=port)


def database_address(settings_dict: dict) -> tuple[str, int] | str:
    """Where PostgreSQL listens for a DATABASES entry: ``(host, port)`` over TCP, or the path
    of its Unix socket (the embedded server) as libpq builds it: ``{dir}/.s.PGSQL.{port}``."""
    port = int(settings_dict.get("PORT") or 5432)
    folder = (settings_dict.get("OPTIONS") or {}).get("host") or settings_dict.get("HOST") or ""
    if folder.startswith("/"):
        return f"{folder}/.s.PGSQL.{port}"
    return (settings_dict.get("HOST") or "127.0.0.1", port)


class IngestProcess:
    """One ``manage.py ingest_mqtt`` child with a stable client id and its own status file.

    Detection tasks go to ``REDIS_URL`` only with ``redis=True`` (benchmarks); tests keep them
    off the shared broker, where a Celery worker of another test could pick them up.
    """

    def __init__(self, workdir: Path, *, url: str, database: str, client_id: str,
                 share_group: str | None = None, prefix: str = "opstwin",
                 batch_size: int = 500, extra_env: dict | None = None,
                 redis: bool = False) -> None:
        self.workdir, self.client_id = workdir, client_id
        self.status_file = workdir / f"{client_id}.json"
        self.args = [sys.executable, str(REPO / "manage.py"), "ingest_mqtt", "--url", url,
                     "--client-id", client_id, "--batch-size", str(batch_size),
                     "--session-expiry", "600", "--status-file", str(self.status_file),
                     "--stats-every", "5"]
        if share_group:
            self.args += ["--share-group", share_group]
        env = os.environ | {"DATABASE_URL": database, "MQTT_TOPIC_PREFIX": prefix,
                            "DB_CONN_MAX_AGE": "600", "PYTHONUNBUFFERED": "1",
                            "CELERY_TASK_ALWAYS_EAGER": "0"} | (extra_env or {})
        if not redis:  # detection tasks go to an in-memory broker nobody reads
            env.pop("REDIS_URL", None)
        self.env = env
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> IngestProcess:
        self.status_file.unlink(missing_ok=True)
        log = (self.workdir / f"{self.client_id}.log").open("ab")
        self.process = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=log,
                                        stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_connected(self, timeout: float = 120) -> None:
        if not wait_for(lambda: self.status().get("connected") is True, timeout):
            raise RuntimeError(f"{self.client_id} did not connect; see its log in {self.workdir}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final commit, no acks."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class TcpProxy:
    """A TCP forwarder to ``upstream`` that can be cut (all connections dropped, new ones
    refused) and restored: PostgreSQL "down" without touching PostgreSQL."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.lock = threading.Lock()
        self.running = True
        self.cuts = 0
        self._listen()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="tcp-proxy")
        self.thread.start()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        with self.lock:
            self.listener = listener
            self.selector.register(listener, selectors.EVENT_READ)

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):  # a Unix socket (the embedded PostgreSQL)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.settimeout(5)
            server.connect(self.upstream)
            return server
        server = socket.create_connection(self.upstream, timeout=5)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return server

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        try:
            server = self._connect_upstream()
        except OSError:
            client.close()
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for sock in (client, server):
            sock.setblocking(True)
        self.pairs[client], self.pairs[server] = server, client
        self.selector.register(client, selectors.EVENT_READ)
        self.selector.register(server, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        peer = self.pairs.get(sock)
        try:
            data = sock.recv(65536)
            if data and peer is not None:
                peer.sendall(data)
                return
        except OSError:
            pass
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self.pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self.pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(s)
            s.close()

    def _loop(self) -> None:
        while self.running:
            with self.lock:
                events = self.selector.select(timeout=0.05) if self.selector.get_map() else []
                for key, _ in events:
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)
            if not events:
                time.sleep(0.005)

    def cut(self) -> None:
        """Drop every connection and stop listening (connects are refused)."""
        with self.lock:
            for sock in list(self.pairs):
                self._close(sock)
            if self.listener is not None:
                self.selector.unregister(self.listener)
                self.listener.close()
                self.listener = None
            self.cuts += 1

    def restore(self) -> None:
        self._listen()

    def close(self) -> None:
        self.cut()
        self.running = False
        self.thread.join(timeout=5)


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code


class Publisher:
    """QoS 1 publisher on its own paho network thread; a message is done at its PUBACK.

    paho keeps un-acknowledged QoS 1 messages and re-sends them after it reconnects. A PUBACK
    with reason 0x10 (No matching subscribers) means the broker dropped the message: Mosquitto
    2.0 does not restore *shared* subscriptions from its persistence file, so right after a
    broker restart, until the ingest processes re-subscribe, a publish reaches nobody. Like a
    well-behaved MQTT v5 sensor, this publisher sends such messages again after a pause.
    """

    def __init__(self, url: str, *, client_id: str | None = None) -> None:
        port = int(url.rsplit(":", 1)[1])
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.pending: list[mqtt.MQTTMessageInfo] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._by_mid: dict[int, tuple[str, bytes]] = {}
        self._early: dict[int, int] = {}
        self._retry: list[tuple[float, str, bytes]] = []

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        # Runs under paho's outgoing-message lock: never call paho from here.
        with self._lock:
            item = self._by_mid.pop(mid, None)
            if item is None:  # PUBACK before publish() recorded the mid
                self._early[mid] = int(reason_code.value)
            elif reason_code.value == NO_MATCHING_SUBSCRIBERS:
                self._retry.append((time.monotonic(), *item))
                self.refused += 1

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Kept in paho's outgoing queue and sent once connected; not a failure.
            info.rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._by_mid[info.mid] = (topic, payload)
            elif early == NO_MATCHING_SUBSCRIBERS:
                self._retry.append((time.monotonic(), topic, payload))
                self.refused += 1
        self.pending.append(info)
        return info

    def _resend_refused(self, after: float = 0.5) -> None:
        now = time.monotonic()
        with self._lock:
            due = [r for r in self._retry if now - r[0] >= after]
            self._retry = [r for r in self._retry if now - r[0] < after]
        for _, topic, payload in due:
            self.publish(topic, payload)

    def publish_at_rate(self, messages: Iterable[tuple[str, bytes]], rate: float,
                        on_progress: Callable[[int], None] | None = None) -> int:
        """Publish ``messages`` at about ``rate`` per second; returns how many were sent."""
        started, sent = time.monotonic(), 0
        for topic, payload in messages:
            self.publish(topic, payload)
            sent += 1
            if on_progress:
                on_progress(sent)
            if sent % 500 == 0:
                self._resend_refused()
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        return sent

    def unacked(self) -> int:
        """Messages not yet PUBACKed, plus those refused and waiting to be sent again."""
        self._resend_refused()
        with self._lock:
            waiting = len(self._retry)
        return waiting + sum(1 for info in self.pending if not info.is_published())

    def wait_all_acked(self, timeout: float) -> bool:
        return wait_for(lambda: self.unacked() == 0, timeout, every=0.2)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def skab_event(twin: str, asset: str, ts: datetime, values: list[float], *,
               tags: dict | None = None) -> dict:
    """A telemetry.v1 event with the eight SKAB metrics."""
    return {"event_id": str(uuid.uuid4()), "twin_id": twin, "asset_id": asset,
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "metrics": dict(zip(SKAB_METRICS, values, strict=True)),
            "tags": tags or {"source": "replay"}, "quality": "good"}


def replay_messages(twin: str, assets: list[str], n: int, *, prefix: str = "opstwin",
                    start: datetime | None = None) -> list[tuple[str, bytes, str]]:
    """``n`` SKAB-shaped events round-robin over ``assets`` at 1 s spacing per asset.

    Returns (topic, payload, event_id) triples.
    """
    import random

    rng = random.Random(n)
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        asset = assets[i % len(assets)]
        ts = start + timedelta(seconds=i // len(assets))
        values = [round(rng.gauss(mu, mu * 0.01 + 0.01), 6)
                  for mu in (0.21, 0.27, 2.5, 1.0, 89.0, 28.6, 229.0, 125.0)]
        doc = skab_event(twin, asset, ts, values)
        out.append((f"{prefix}/{twin}/{asset}/telemetry", json.dumps(doc).encode(),
                    doc["event_id"]))
    return out
