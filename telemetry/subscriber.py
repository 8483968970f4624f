"""The MQTT ingest subscriber: batches QoS 1 messages, commits them, then acknowledges them.

Lossless by construction: paho runs with ``manual_ack``, and a message's PUBACK is sent only
after the batch holding it has committed (``telemetry.services.ingest_batch``). A crash before
the commit leaves the messages un-acked; the broker redelivers them to the persistent session
(or another member of the shared subscription) and ``event_id`` de-duplication drops any that
had in fact been stored. When PostgreSQL is down the subscriber keeps the batch, stops acking
and retries with backoff; the bounded queue then fills, the paho network thread blocks on it,
and the broker stops sending: backpressure, never a silent drop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from django.db import close_old_connections
from django.db.utils import InterfaceError, OperationalError

from opstwin_site.mqtt import connect_client, make_client, protocol_for
from telemetry.choices import IngestSource
from telemetry.services import RawPayload, ingest_batch

log = logging.getLogger(__name__)


@dataclass
class SubscriberStats:
    """Counters for logs and the lag gauge: messages received/committed, current lag (s)."""

    received: int = 0
    committed: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    db_retries: int = 0
    last_commit_lag_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


class IngestSubscriber:
    """Subscribe ``opstwin/+/+/telemetry`` (optionally as ``$share/<group>/...``) and ingest.

    ``batch_size`` messages or ``batch_seconds`` of waiting, whichever comes first, make one
    batch. ``buffer`` bounds the in-memory queue (messages received but not yet committed).
    """

    def __init__(
        self, url: str, *, topic_filter: str, batch_size: int = 500, batch_seconds: float = 0.25,
        buffer: int = 5000, client_id: str | None = None, share_group: str | None = None,
    ) -> None:
        self.url, self.batch_size, self.batch_seconds = url, batch_size, batch_seconds
        self.topic_filter = f"$share/{share_group}/{topic_filter}" if share_group else topic_filter
        self.queue: queue.Queue = queue.Queue(maxsize=buffer)
        self.stats = SubscriberStats()
        self.stopping = threading.Event()
        self.client_id = client_id
        self.client = make_client(url, client_id=client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(buffer)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties=None) -> None:
        if reason_code.is_failure:
            log.error("MQTT connect refused: %s", reason_code)
            return
        client.subscribe(self.topic_filter, qos=1)
        log.info("subscribed to %s", self.topic_filter)

    def _on_message(self, _client, _userdata, message) -> None:
        # Blocks when the buffer is full: the network thread stops reading (backpressure).
        self.queue.put((message.payload, message.topic, message.mid, message.qos, time.time()))
        self.stats.received += 1

    def start(self) -> None:
        """Connect (persistent session on MQTT v5) and start paho's network thread."""
        # A named client keeps its session (and its un-acked messages) across restarts.
        persistent = self.client_id is not None and protocol_for(self.url) == mqtt.MQTTv5
        connect_client(self.client, self.url, clean_start=not persistent)
        self.client.loop_start()

    def stop(self) -> None:
        """Ask ``run`` to finish the current batch and return; then disconnect."""
        self.stopping.set()

    def _next_batch(self) -> list[tuple]:
        batch: list[tuple] = []
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

    def _commit(self, batch: list[tuple]) -> None:
        payloads = [RawPayload(body=payload, topic=topic) for payload, topic, *_ in batch]
        delay = 0.5
        while True:
            try:
                report = ingest_batch(payloads, source=IngestSource.MQTT)
                break
            except (OperationalError, InterfaceError) as exc:
                self.stats.db_retries += 1
                log.warning("database unavailable (%s); holding %d messages, retry in %.1fs",
                            exc.__class__.__name__, len(batch), delay)
                close_old_connections()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        for _payload, _topic, mid, qos, _received in batch:
            if qos > 0:
                self.client.ack(mid, qos)
        self.stats.committed += len(batch)
        self.stats.accepted += report.accepted
        self.stats.duplicates += report.duplicates
        self.stats.rejected += len(report.rejected)
        self.stats.last_commit_lag_s = time.time() - batch[0][4]

    def run(self) -> None:
        """Consume batches until ``stop()``; every committed batch is acked in receive order."""
        while not (self.stopping.is_set() and self.queue.empty()):
            batch = self._next_batch()
            if batch:
                self._commit(batch)
        self.client.loop_stop()
        self.client.disconnect()
