"""The MQTT ingest subscriber: batches QoS 1 messages, commits them, then acknowledges them.

Lossless by construction:

- paho runs with ``manual_ack``; a message's PUBACK is sent only after the batch holding it has
  committed (``telemetry.services.ingest_batch``). A crash before the commit leaves it un-acked.
- With a ``client_id`` on MQTT v5 the session is persistent: ``clean_start=False`` and a Session
  Expiry Interval (``INGEST_SESSION_EXPIRY_SECONDS``; without it a v5 session ends with the
  connection). The broker keeps un-acked and queued messages while the process is down and
  redelivers them when the same client id reconnects; ``event_id`` de-duplication drops any that
  had in fact been stored. A shared-subscription member must come back with its own id.
- Caveat, Mosquitto 2.0 with ``--share-group``: the broker does not restore *shared*
  subscriptions from its persistence file. Messages queued for a session survive a broker
  restart, but one published after the restart and before the ingest processes re-subscribe
  (about a second) matches no subscriber and is dropped; the broker says so in the PUBACK
  (MQTT v5 reason 0x10, "No matching subscribers"). Publishers must send such messages again
  (``telemetry.tests.harness.Publisher`` does); without ``--share-group`` the subscription is
  restored with the session and nothing is dropped.
- A message is acked only on the connection it arrived on: ``generation`` counts lost
  connections and each message remembers the one it came with. After a reconnect the broker
  redelivers the old connection's un-acked messages itself (same packet ids); acking a stale
  packet id could acknowledge a *different*, newer message. paho empties its outgoing queue
  before it reconnects, and ``on_disconnect`` runs before that, so a check-and-ack under
  ``_ack_lock`` can never put a stale PUBACK on the new connection. (paho behaviour relied on
  here and in ``manual_ack``: pinned ``paho-mqtt>=2.0,<3``, covered by the MQTT tests.)
- The broker must keep what it queues for the session while the process is down: Mosquitto's
  default ``max_queued_messages 1000`` drops the rest (``telemetry.broker``). The subscriber
  cannot read that setting; it watches ``$SYS`` and the session-present flag and warns.

Backpressure, never a silent drop: the CONNECT Receive Maximum (``buffer``) caps un-acked
messages in flight to this process, so the in-memory queue is bounded by the protocol. When
PostgreSQL is slow or down the batch is held and retried with backoff; acks stop, the window
fills, and the broker keeps further messages queued in the session. Counters, the buffer and the
lags are logged and written to a status file (``telemetry.ingest_status``).

Poison: a payload that validates but that the database still refuses (not a connection error)
is isolated by bisecting the batch and stored as a dead letter with the database's reason.

Detection never delays an acknowledgement: the assets of a committed batch go to a detection
thread (``DetectionHandoff``), which enqueues their detection (with eager Celery, the embedded
default, it runs detection there). Assets waiting there coalesce: one run scores everything
since the asset's watermark. Work left at exit is not lost: the asset's next run catches up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.utils import InterfaceError, OperationalError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry import handoff
from telemetry.broker import SYS_TOPICS, BrokerWatch
from telemetry.choices import IngestSource
from telemetry.ingest_status import LagHistogram, read_status, write_status
from telemetry.services import IngestReport, RawPayload, ingest_batch, store_dead_letters
from twins.mqtt import make_client, protocol_for
from twins.state import publish_states

log = logging.getLogger(__name__)
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def _make_client(url: str, client_id: str | None) -> mqtt.Client:
    """A manual-ack paho client for ``url`` (credentials and TLS as everywhere else)."""
    return make_client(url, client_id=client_id or f"opstwin-ingest-{os.getpid()}",
                       manual_ack=True)


@dataclass
class SubscriberStats:
    """Counters for logs and the status file; lags in seconds.

    ``event_lag``: commit time minus the event's own ``ts`` (freshness; publish-to-commit when
    sensors stamp events as they publish). ``commit_lag``: commit time minus receive time.
    """

    received: int = 0
    committed: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    poison: int = 0
    db_retries: int = 0
    db_down_since: float | None = None
    last_error: str = ""
    connects: int = 0
    connected: bool = False
    last_commit_lag_s: float = 0.0
    event_lag: LagHistogram = field(default_factory=LagHistogram)
    commit_lag: LagHistogram = field(default_factory=LagHistogram)
    started: float = field(default_factory=time.time)


class DetectionHandoff:
    """A thread that runs detection for assets whose telemetry was committed.

    ``add(asset_ids)`` returns at once; the thread hands the pending assets (a set: an asset
    added several times while waiting runs once) to ``telemetry.handoff`` (stage ``DETECT``),
    which isolates each asset's failures, at most once per ``spacing`` seconds: the batches
    committed meanwhile join the next handoff (one Celery message for all of them instead of
    one per batch; detection starts up to ``spacing`` later). ``stop(timeout)`` finishes what
    is pending at once, up to ``timeout`` seconds. After committed telemetry it also puts the
    assets' coalesced state on the feed (``twins.state.publish_states``), at most once per
    ``ASSET_STATE_MIN_INTERVAL_SECONDS`` and once more when the readings stop, so the feed
    follows the plant without Celery beat (which still catches what goes silent).
    """

    def __init__(self, spacing: float = 0.5) -> None:
        self.spacing = spacing
        self._pending: set[int] = set()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ingest-detection", daemon=True)

    def add(self, asset_ids: list[int]) -> None:
        """Queue detection of ``asset_ids`` (starts the thread on first use)."""
        with self._wake:
            if not self._thread.is_alive() and not self._stopping:
                self._thread.start()
            self._pending.update(asset_ids)
            self._wake.notify()

    @property
    def pending(self) -> int:
        """Assets waiting for their detection run."""
        return len(self._pending)

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _gather(self, handed_at: float) -> None:
        """Wait (holding ``_wake``) until ``spacing`` seconds after the last handoff or a stop,
        while more assets may be added."""
        while not self._stopping and (rest := handed_at + self.spacing - time.monotonic()) > 0:
            self._wake.wait(rest)

    def _loop(self) -> None:
        interval = settings.ASSET_STATE_MIN_INTERVAL_SECONDS
        unpublished, published_at, handed_at = False, 0.0, -self.spacing
        try:
            while True:
                with self._wake:
                    if not self._pending and not self._stopping:
                        self._wake.wait(interval if unpublished else None)
                    if self._pending:
                        self._gather(handed_at)
                    if not self._pending and self._stopping:
                        return
                    asset_ids, self._pending = sorted(self._pending), set()
                close_old_connections()
                if asset_ids:
                    unpublished, handed_at = True, time.monotonic()
                    try:
                        handoff.send(handoff.DETECT, asset_ids)
                    except Exception:  # never let one round end the thread
                        log.exception("detection of assets %s failed", asset_ids)
                if unpublished and time.monotonic() - published_at >= interval:
                    unpublished, published_at = False, time.monotonic()
                    try:
                        publish_states()
                    except Exception:
                        log.exception("could not publish the assets' state")
        finally:
            connection.close()


def _network_callback(method):
    """Guard a paho callback of ``IngestSubscriber``.

    An exception escaping a callback ends paho's network thread (``loop_start``), silently: the
    process would look alive and connected while it receives nothing more and sends no acks.
    Instead the exception is logged and stops the subscriber; ``ingest_mqtt`` then exits with an
    error, and a restart with the same client id gets the un-acked messages again.
    """

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            log.exception("MQTT callback %s failed; stopping", method.__name__)
            self.failure = f"{method.__name__}: {exc.__class__.__name__}: {exc}"
            self.stopping.set()
            return None

    return guarded


class _Abandon(Exception):
    """Stop requested while the database is down: leave the batch to the broker."""


class Received(NamedTuple):
    """One message waiting in the queue, with the connection generation it arrived on.

    A named tuple: built once per message on paho's network thread, where it costs a third of
    a frozen dataclass (whose ``__init__`` goes through ``object.__setattr__`` per field).
    """

    payload: bytes
    topic: str
    mid: int
    qos: int
    at: float
    generation: int


class IngestSubscriber:
    """Subscribe ``opstwin/+/+/telemetry`` (optionally as ``$share/<group>/...``) and ingest.

    ``batch_size`` messages or ``batch_seconds`` of waiting, whichever comes first, make one
    batch. ``buffer`` bounds the messages received but not yet committed (Receive Maximum).
    ``status_path`` (default ``INGEST_STATUS_DIR/<client id or pid>.json``) gets the status.
    """

    def __init__(
        self, url: str, *, topic_filter: str, batch_size: int = 500, batch_seconds: float = 0.25,
        buffer: int = 5000, client_id: str | None = None, share_group: str | None = None,
        status_path: Path | None = None, session_expiry: int | None = None,
    ) -> None:
        self.url, self.batch_size, self.batch_seconds = url, batch_size, batch_seconds
        self.topic_filter = f"$share/{share_group}/{topic_filter}" if share_group else topic_filter
        self.buffer = min(buffer, 65535)
        # SimpleQueue: a lock-free put, several times cheaper than Queue under contention; the
        # bound is enforced in _on_message.
        self.queue: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self.stats = SubscriberStats()
        self.stopping = threading.Event()
        self.client_id = client_id
        self.generation = 0
        self._ack_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.in_progress = 0
        self.failure: str | None = None  # set when a network callback failed (see run)
        self.session_expiry = settings.INGEST_SESSION_EXPIRY_SECONDS \
            if session_expiry is None else session_expiry
        name = client_id or f"ingest-{os.getpid()}"
        self.status_path = status_path or Path(settings.INGEST_STATUS_DIR) / f"{name}.json"
        self.broker = BrokerWatch.resume(read_status(self.status_path), client_id)
        self.client = _make_client(url, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.detection = DetectionHandoff()

    # --- network thread ------------------------------------------------------------------------
    @_network_callback
    def _on_connect(self, client, _userdata, flags, reason_code, _properties=None) -> None:
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        self.stats.connects += 1
        self.stats.connected = True
        client.subscribe(self.topic_filter, qos=1)
        for sys_topic in SYS_TOPICS:  # broker facts, QoS 0: never queued, never acked
            client.subscribe(sys_topic, qos=0)
        session_present = bool(getattr(flags, "session_present", False))
        log.info("connected (session present: %s); subscribed to %s", session_present,
                 self.topic_filter)
        if warning := self.broker.on_connect(session_present, self.persistent):
            log.warning(warning)

    @_network_callback
    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:
        with self._ack_lock:
            self.generation += 1
        self.stats.connected = False
        if not self.stopping.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    @_network_callback
    def _on_message(self, _client, _userdata, message) -> None:
        if message.topic.startswith("$SYS/"):
            if warning := self.broker.on_sys(message.topic, message.payload):
                log.warning(warning)
            return
        self._receive(message)

    def _receive(self, message: mqtt.MQTTMessage) -> None:
        """Queue one telemetry message for the next batch (paho's network thread)."""
        # QoS 1 stays within Receive Maximum; only a QoS 0 flood can fill the buffer. Then the
        # network thread waits, stops reading, and TCP pushes back on the broker.
        while self.queue.qsize() >= self.buffer and not self.stopping.is_set():
            time.sleep(0.01)
        self.queue.put(Received(message.payload, message.topic, message.mid, message.qos,
                                time.time(), self.generation))
        self.stats.received += 1

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def persistent(self) -> bool:
        """Whether the broker keeps this client's session across disconnects."""
        return self.client_id is not None and protocol_for(self.url) == mqtt.MQTTv5 \
            and self.session_expiry > 0

    def _connect_properties(self) -> Properties | None:
        if protocol_for(self.url) != mqtt.MQTTv5:
            return None
        properties = Properties(PacketTypes.CONNECT)
        properties.ReceiveMaximum = self.buffer
        if self.persistent:
            properties.SessionExpiryInterval = self.session_expiry
        return properties

    def start(self) -> None:
        """Connect (in the background, retrying) and start paho's network thread."""
        parts = urlsplit(self.url)
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        kwargs = {}
        if protocol_for(self.url) == mqtt.MQTTv5:
            kwargs = {"clean_start": not self.persistent,
                      "properties": self._connect_properties()}
        self.client.connect_async(parts.hostname, port, keepalive=30, **kwargs)
        self.client.loop_start()
        threading.Thread(target=self._status_loop, daemon=True, name="ingest-status").start()

    def stop(self) -> None:
        """Ask ``run`` to commit what it holds and return (safe from a signal handler)."""
        self.stopping.set()

    # --- batches -------------------------------------------------------------------------------
    def _next_batch(self) -> list[Received]:
        batch: list[Received] = []
        deadline = time.monotonic() + self.batch_seconds
        while len(batch) < self.batch_size:
            timeout = deadline - time.monotonic()
            if timeout <= 0 and batch:
                break
            try:
                batch.append(self.queue.get(timeout=max(timeout, 0.05)))
            except queue.Empty:
                if batch or self.stopping.is_set():
                    break
        return batch

    def _ingest(self, payloads: list[RawPayload]) -> IngestReport:
        """``ingest_batch``, isolating payloads the database refuses for their content."""
        try:
            return ingest_batch(payloads, source=IngestSource.MQTT,
                                after_commit=self.detection.add)
        except CONNECTION_ERRORS:
            raise
        except DatabaseError as exc:
            if len(payloads) == 1:
                log.error("database refused a payload; dead-lettered: %s", exc)
                with transaction.atomic():
                    store_dead_letters([(payloads[0], f"database refused: {exc}")],
                                       source=IngestSource.MQTT)
                self.stats.poison += 1
                return IngestReport(rejected=[(0, str(exc))])
            mid = len(payloads) // 2
            left, right = self._ingest(payloads[:mid]), self._ingest(payloads[mid:])
            return _merge_reports(left, right, mid)

    def _ingest_until_stored(self, batch: list[Received]) -> IngestReport:
        payloads = [RawPayload(body=m.payload, topic=m.topic) for m in batch]
        delay = 0.5
        while True:
            try:
                report = self._ingest(payloads)
            except CONNECTION_ERRORS as exc:
                if self.stopping.is_set() and self.persistent:
                    # Not acked, so the broker keeps these for our session: safe to leave.
                    raise _Abandon from exc
                self._database_down(exc, batch, delay)
                delay = min(delay * 2, 5.0)
                continue
            if self.stats.db_down_since is not None:
                log.warning("database back after %.1fs", time.time() - self.stats.db_down_since)
                self.stats.db_down_since = None
            return report

    def _database_down(self, exc: Exception, batch: list[Received], delay: float) -> None:
        stats = self.stats
        stats.db_retries += 1
        stats.db_down_since = stats.db_down_since or time.time()
        stats.last_error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        log.warning("database unavailable (%s); holding %d messages (oldest %.1fs), %d more "
                    "buffered; not acking; retry in %.1fs", stats.last_error, len(batch),
                    time.time() - batch[0].at, self.queue.qsize(), delay)
        # Drop the broken connection outright; the next attempt opens a fresh one.
        with contextlib.suppress(DatabaseError):
            connection.close()
        time.sleep(delay)

    def _commit(self, batch: list[Received]) -> None:
        self.in_progress = len(batch)
        report = self._ingest_until_stored(batch)
        committed_at = time.time()
        with self._ack_lock:
            for message in batch:
                # Only on the connection it came in on (see the module docstring).
                if message.qos > 0 and message.generation == self.generation:
                    self.client.ack(message.mid, message.qos)
        with self._stats_lock:
            self._count(batch, report, committed_at)
        self.in_progress = 0

    def _count(self, batch: list[Received], report: IngestReport, committed_at: float) -> None:
        stats = self.stats
        stats.committed += len(batch)
        stats.accepted += report.accepted
        stats.duplicates += report.duplicates
        stats.rejected += len(report.rejected)
        stats.last_commit_lag_s = committed_at - batch[0].at
        stats.commit_lag.add_all([committed_at - message.at for message in batch])
        stats.event_lag.add_all([committed_at - ts.timestamp() for ts in report.accepted_ts])

    def run(self) -> None:
        """Consume batches until ``stop()``; then commit what is buffered and disconnect.

        Asked to stop while PostgreSQL is down, a persistent-session subscriber leaves without
        committing (nothing was acked; the broker redelivers); any other keeps retrying. After a
        failed network callback it stops the same way as asked; ``failure`` says why.
        """
        try:
            while not self.stopping.is_set():
                batch = self._next_batch()
                if batch:
                    self._commit(batch)
            self._drain()
        except _Abandon:
            log.warning("stopping with %d uncommitted messages left to the broker's session",
                        self.queue.qsize() + self.in_progress)
            self.client.disconnect()
            self.client.loop_stop()
        finally:
            connection.close()  # this thread's connection (run may be on its own thread)
            self.detection.stop()
            self._write_status()

    def _commit_buffered(self) -> None:
        while batch := self._next_batch():
            self._commit(batch)

    def _drain(self, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (batch := self._next_batch()):
            self._commit(batch)  # acked: still connected
        self.client.disconnect()
        self.client.loop_stop()
        self._commit_buffered()  # arrived while disconnecting: store; the broker redelivers


    # --- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        """JSON-able snapshot: counters, buffered messages, lags (see ``SubscriberStats``)."""
        with self._stats_lock:
            stats = asdict(self.stats)
            stats["event_lag"] = self.stats.event_lag.to_dict()
            stats["commit_lag"] = self.stats.commit_lag.to_dict()
        return stats | {
            "client_id": self.client_id, "pid": os.getpid(), "topic_filter": self.topic_filter,
            "persistent_session": self.persistent, "failure": self.failure,
            "buffered": self.queue.qsize() +
            self.in_progress, "buffer_limit": self.buffer, "updated_at": time.time(),
            "detection_pending": self.detection.pending, "broker": self.broker.to_dict(),
        }

    def _write_status(self) -> None:
        try:
            write_status(self.status_path, self.status())
        except OSError as exc:
            log.warning("cannot write ingest status to %s: %s", self.status_path, exc)

    def _status_loop(self, every: float = 1.0) -> None:
        while not self.stopping.wait(every):
            self._write_status()


def _merge_reports(left: IngestReport, right: IngestReport, offset: int) -> IngestReport:
    return IngestReport(
        accepted=left.accepted + right.accepted, duplicates=left.duplicates + right.duplicates,
        samples=left.samples + right.samples,
        rejected=left.rejected + [(i + offset, r) for i, r in right.rejected],
        asset_ids=left.asset_ids | right.asset_ids,
        accepted_ts=left.accepted_ts + right.accepted_ts,
    )
