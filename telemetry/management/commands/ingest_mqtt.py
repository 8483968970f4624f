"""``manage.py ingest_mqtt``: the MQTT telemetry subscriber process.

Run one per core (or host) with ``--share-group`` and a distinct, stable ``--client-id`` each:
the id makes the broker keep the process's session (and its un-acked messages) while it is
down, so a crash or ``kill -9`` loses nothing once the same id comes back -- provided the broker
queues everything published meanwhile (``telemetry.broker.REQUIREMENT``; Mosquitto's default
``max_queued_messages 1000`` does not). MQTT gives a client no way to read that setting, so the
command states the requirement at start and warns when it sees its effect: Mosquitto's count
of dropped messages rising, or a persistent session the broker no longer had.
"""

import logging
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telemetry.broker import REQUIREMENT
from telemetry.subscriber import IngestSubscriber

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Subscribe to opstwin/+/+/telemetry (QoS 1) and store telemetry in batches."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=None, help="broker URL (default: MQTT_URL)")
        parser.add_argument("--share-group", default=None,
                            help="join MQTT v5 shared subscription $share/<group>/...")
        parser.add_argument("--client-id", default=None,
                            help="stable id for a persistent session (unacked messages survive)")
        parser.add_argument("--batch-size", type=int, default=settings.INGEST_BATCH_SIZE)
        parser.add_argument("--batch-seconds", type=float, default=settings.INGEST_BATCH_SECONDS)
        parser.add_argument("--buffer", type=int, default=5000,
                            help="max messages received but not yet committed (Receive Maximum)")
        parser.add_argument("--session-expiry", type=int,
                            default=settings.INGEST_SESSION_EXPIRY_SECONDS,
                            help="seconds the broker keeps a --client-id session while down")
        parser.add_argument("--status-file", type=Path, default=None,
                            help="JSON status path (default: INGEST_STATUS_DIR/<client id>.json)")
        parser.add_argument("--stats-every", type=float, default=10.0,
                            help="seconds between progress/lag log lines")

    def handle(self, *args, **opts):
        url = opts["url"] or settings.MQTT_URL
        if not url:
            raise CommandError("no broker: set MQTT_URL or pass --url")
        subscriber = IngestSubscriber(
            url, topic_filter=f"{settings.MQTT_TOPIC_PREFIX}/+/+/telemetry",
            batch_size=opts["batch_size"], batch_seconds=opts["batch_seconds"],
            buffer=opts["buffer"], client_id=opts["client_id"], share_group=opts["share_group"],
            status_path=opts["status_file"], session_expiry=opts["session_expiry"],
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: subscriber.stop())
        subscriber.start()
        self.stdout.write(f"ingest_mqtt: subscribing to {subscriber.topic_filter} on {url} "
                          f"(persistent session: {subscriber.persistent}, "
                          f"status: {subscriber.status_path})")
        self.stdout.write(f"ingest_mqtt: broker requirement: {REQUIREMENT}. A client cannot read "
                          "this setting; watching $SYS/broker/publish/messages/dropped and the "
                          "session-present flag instead.")
        if not subscriber.persistent:
            log.warning("no persistent session (needs --client-id and MQTT v5): telemetry "
                        "published while this process is down is not kept for it")
        self.stdout.flush()
        self._report_periodically(subscriber, opts["stats_every"])
        subscriber.run()
        if subscriber.failure:
            # A non-zero exit gets the process restarted; its session keeps what it did not ack.
            raise CommandError(f"stopped after a failed MQTT callback: {subscriber.failure}")

    def _report_periodically(self, subscriber: IngestSubscriber, every: float) -> None:
        def loop():
            while not subscriber.stopping.wait(every):
                s = subscriber.status()
                log.info("ingest: received=%d committed=%d accepted=%d dup=%d rejected=%d "
                         "buffered=%d commit_lag=%.3fs event_lag_p99=%s db_retries=%d",
                         s["received"], s["committed"], s["accepted"], s["duplicates"],
                         s["rejected"], s["buffered"], s["last_commit_lag_s"],
                         s["event_lag"]["p99_s"], s["db_retries"])

        threading.Thread(target=loop, daemon=True).start()
