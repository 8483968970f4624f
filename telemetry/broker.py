"""What OpsTwin needs from its MQTT broker, and what a subscriber can see of it (no Django).

A persistent-session subscriber (``ingest_mqtt --client-id``) loses nothing across a crash only
if the broker keeps every QoS 1 message published while it is down. Mosquitto queues such
messages up to ``max_queued_messages`` (default 1000) and ``max_queued_bytes`` and then drops
the rest, although each publisher got PUBACK "Success"; it keeps queues and sessions across
its own restart only with ``persistence true``. ``docker/mosquitto.conf`` sets all three.

A client cannot read the broker's configuration through MQTT, so ``BrokerWatch`` follows what
it can see: Mosquitto's ``$SYS/broker/version`` and its broker-wide count of dropped messages,
``$SYS/broker/publish/messages/dropped`` (published every ``sys_interval``, 10 s by default;
other brokers, or an ACL without ``$SYS`` read access, leave both unknown), and the CONNACK's
session-present flag (the broker no longer had the session: everything queued for it is gone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

REQUIREMENT = (
    "the broker must queue every QoS 1 message for a disconnected persistent session: "
    "Mosquitto `max_queued_messages` above events/s x the longest ingest outage (1,000,000 in "
    "docker/mosquitto.conf), `max_queued_bytes 0` and `persistence true`; with Mosquitto's "
    "default `max_queued_messages 1000` every message beyond 1,000 published while this "
    "subscriber is down is dropped, although its publisher got PUBACK Success"
)
VERSION_TOPIC = "$SYS/broker/version"
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
SYS_TOPICS = (VERSION_TOPIC, DROPPED_TOPIC)
MAX_WARNINGS = 10


@dataclass
class BrokerWatch:
    """Broker facts seen by one subscriber, and the warnings they raised.

    ``dropped``: the broker-wide count of messages Mosquitto dropped since it started (None:
    not seen yet, or not published); ``seen_dropped``: the last count this subscriber saw,
    carried over from its previous run through its status file, so drops that happened while it
    was down are noticed when it comes back. ``warnings``: ``[epoch seconds, text]``, newest
    last, at most ``MAX_WARNINGS``.
    """

    version: str | None = None
    dropped: int | None = None
    seen_dropped: int | None = None
    session_present: bool | None = None
    had_session: bool = False
    warnings: list[list] = field(default_factory=list)

    @classmethod
    def resume(cls, previous: dict | None, client_id: str | None) -> BrokerWatch:
        """A watch that remembers ``previous`` (the last status document of this client id)."""
        broker = (previous or {}).get("broker") or {}
        if not previous or previous.get("client_id") != client_id or client_id is None:
            return cls()
        return cls(seen_dropped=broker.get("dropped"),
                   had_session=bool(previous.get("persistent_session")
                                    and previous.get("connects")))

    def on_sys(self, topic: str, payload: bytes) -> str | None:
        """Take one ``$SYS`` message; returns a warning when the drop count rose."""
        text = payload.decode("utf-8", "replace").strip()
        if topic == VERSION_TOPIC:
            self.version = text
            return None
        if topic != DROPPED_TOPIC or not text.isdigit():
            return None
        count, seen = int(text), self.seen_dropped
        self.dropped = self.seen_dropped = count
        if seen is not None and count < seen:
            return None  # the broker restarted: its counters start again at 0
        rise = count - (seen or 0)
        if rise <= 0:
            return None
        since = "since this subscriber last looked" if seen is not None else "since it started"
        return self._warn(
            f"the broker has dropped {rise:,} messages {since} (count of all clients, "
            f"{DROPPED_TOPIC}): telemetry published while a subscriber was down or behind may "
            f"be lost; {REQUIREMENT}")

    def on_connect(self, session_present: bool, persistent: bool) -> str | None:
        """Take a CONNACK; returns a warning when a persistent session was expected but gone."""
        self.session_present = session_present
        expected, self.had_session = self.had_session, self.had_session or persistent
        if persistent and expected and not session_present:
            return self._warn(
                "the broker no longer had this subscriber's session: telemetry published while "
                "it was down is lost (session expired, broker restarted without persistence, or "
                "another client connected with this client id and a clean start)")
        return None

    def _warn(self, text: str) -> str:
        self.warnings = [*self.warnings, [round(time.time(), 3), text]][-MAX_WARNINGS:]
        return text

    def to_dict(self) -> dict:
        """JSON-able facts for the status file (``dropped`` None: unknown)."""
        return {"version": self.version, "dropped": self.dropped,
                "session_present": self.session_present, "warnings": self.warnings,
                "requirement": REQUIREMENT}
