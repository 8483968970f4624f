"""A simulated asset for the demo: it takes commands over MQTT and acknowledges them.

It subscribes to ``{prefix}/{twin}/+/command`` (QoS 1) and answers every command on
``{prefix}/{twin}/{asset}/command/ack`` with ``{"command_id", "status", "detail", "at"}``:
``ok`` for an action a pump understands (``ACTIONS``), ``rejected`` for anything else, a
payload that is not a command, or a copy that arrives after its ``expires_at``. It
de-duplicates by ``command_id`` as a real asset must: a command id it already applied is
acknowledged again (the same answer, ``"duplicate": true``) without a second effect, so
OpsTwin may re-send a command whose outcome it lost. It does not change the replayed
telemetry: SKAB is a recording, so the demo's verification step compares the simulated band
with what the recording did next.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime

from django.conf import settings

from twins.mqtt import connect_client, make_client

log = logging.getLogger(__name__)
ACTIONS = frozenset({"open_valve", "reduce_load", "hold", "emergency_stop", "restore_load",
                     "restore_valve"})


class SimulatedDevice:
    """Every asset of one twin, as far as commands go. ``received`` lists every command
    delivery seen (re-sends included), ``applied`` the effects: one ``{"topic", "command_id",
    "action"}`` per distinct command id acknowledged ``ok``."""

    def __init__(self, mqtt_url: str, twin_slug: str) -> None:
        self.url, self.twin_slug, self.received = mqtt_url, twin_slug, []
        self.applied: list[dict] = []
        self._answers: dict[str, dict] = {}  # command_id → the first (effective) answer
        self._lock = threading.Lock()
        self.prefix = settings.MQTT_TOPIC_PREFIX
        self._subscribed = threading.Event()
        self._client = make_client(mqtt_url, client_id=f"opstwin-device-{uuid.uuid4().hex[:8]}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._subscribed.set()

    def start(self, timeout: float = 5.0) -> SimulatedDevice:
        """Connect and subscribe; returns once the broker confirmed the subscription."""
        connect_client(self._client, self.url)
        self._client.loop_start()
        self._client.subscribe(f"{self.prefix}/{self.twin_slug}/+/command", qos=1)
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError("the broker did not confirm the device's subscription")
        return self

    def stop(self) -> None:
        self._client.disconnect()  # before loop_stop: wakes the network loop at once
        self._client.loop_stop()

    @staticmethod
    def answer(payload: bytes, now: datetime | None = None) -> dict:
        """The ack for one command payload at ``now`` (pure: no I/O, no de-duplication)."""
        try:
            command = json.loads(payload)
        except ValueError:
            command = None
        if not isinstance(command, dict) or not command.get("command_id"):
            return {"command_id": None, "status": "rejected", "detail": "not a command"}
        expires = _expiry(command.get("expires_at"))
        if expires is not None and expires < (now or datetime.now(UTC)):
            return {"command_id": command["command_id"], "status": "rejected",
                    "detail": f"expired at {command['expires_at']}"}
        ok = command.get("action") in ACTIONS
        return {"command_id": command["command_id"], "status": "ok" if ok else "rejected",
                "detail": f"{command.get('action')} {'applied' if ok else 'unknown action'}"}

    def handle(self, topic: str, payload: bytes) -> dict:
        """The ack for one delivery: a repeated command id gets its first answer again,
        marked ``duplicate``, with no second effect; a first ``ok`` is recorded in
        ``applied``. Thread-safe."""
        ack = self.answer(payload)
        with self._lock:
            first = self._answers.get(ack["command_id"]) if ack["command_id"] else None
            if first is not None:
                ack = first | {"duplicate": True}
            elif ack["status"] == "ok":
                self._answers[ack["command_id"]] = ack
                self.applied.append({"topic": topic, "command_id": ack["command_id"],
                                     "action": json.loads(payload).get("action")})
            self.received.append({"topic": topic, "ack": ack})
        return ack | {"at": datetime.now(UTC).isoformat()}

    def _on_message(self, client, _userdata, message) -> None:
        ack = self.handle(message.topic, message.payload)
        client.publish(f"{message.topic}/ack", json.dumps(ack), qos=1)
        log.info("device acked %s: %s", ack["command_id"], ack["status"])


def _expiry(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
