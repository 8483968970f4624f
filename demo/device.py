"""A simulated asset for the demo: it takes commands over MQTT and acknowledges them.

It subscribes to ``{prefix}/{twin}/+/command`` (QoS 1) and answers every command on
``{prefix}/{twin}/{asset}/command/ack`` with ``{"command_id", "status", "detail", "at"}``
(and, with a plant, ``effective_from``: the sensor time after which its readings answer the
command, so verification does not judge readings that were already on their way):
``ok`` for an action a pump understands (``ACTIONS``), ``rejected`` for anything else, a
payload that is not a command, or a copy that arrives after its ``expires_at``. It
de-duplicates by ``command_id`` as a real asset must: a command id it already applied is
acknowledged again (the same answer, ``"duplicate": true``) without a second effect, so
OpsTwin may re-send a command whose outcome it lost.

With a ``plant`` (``demo.plant.Plant``) the device is a small plant simulator: the first
``ok`` of a command id is applied to the plant before the ack is sent, so the telemetry the
replay publishes through ``plant.sense`` from then on follows the asset's what-if model for
that action (until a rollback or another command), or misbehaves as the plant's fault plan
says. Without one it only acknowledges, and the replayed telemetry is the recording's.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection

from demo.plant import Plant
from twins.mqtt import connect_client, make_client

log = logging.getLogger(__name__)
ACTIONS = frozenset({"open_valve", "reduce_load", "hold", "emergency_stop", "restore_load",
                     "restore_valve"})


class SimulatedDevice:
    """Every asset of one twin (``twin_slug``, or several: an iterable of slugs), as far as
    commands go. ``received`` lists every command delivery seen (re-sends included),
    ``applied`` the effects: one ``{"topic", "command_id", "action"}`` per distinct command id
    acknowledged ``ok`` (with a ``plant``, also ``"plant"``: the plant's record of it)."""

    def __init__(self, mqtt_url: str, twin_slug: str | Iterable[str], *,
                 plant: Plant | None = None) -> None:
        slugs = [twin_slug] if isinstance(twin_slug, str) else list(twin_slug)
        self.url, self.twin_slugs, self.received = mqtt_url, slugs, []
        self.twin_slug, self.plant = slugs[0], plant
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
        self._client.subscribe([(f"{self.prefix}/{slug}/+/command", 1)
                                for slug in self.twin_slugs])
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
        ``applied`` and, with a plant, applied to it (before the ack goes out). Thread-safe."""
        ack = self.answer(payload)
        with self._lock:
            first = self._answers.get(ack["command_id"]) if ack["command_id"] else None
            if first is not None:
                ack = first | {"duplicate": True}
            elif ack["status"] == "ok":
                self._answers[ack["command_id"]] = ack
                command = json.loads(payload)
                applied = {"topic": topic, "command_id": ack["command_id"],
                           "action": command.get("action")}
                if self.plant is not None:
                    twin_slug, asset_slug = topic.split("/")[-3:-1]
                    applied["plant"] = self.plant.command(twin_slug, asset_slug, command)
                    if applied["plant"]["effective_from"]:
                        ack["effective_from"] = applied["plant"]["effective_from"]
                self.applied.append(applied)
            self.received.append({"topic": topic, "ack": ack})
        return ack | {"at": datetime.now(UTC).isoformat()}

    def sense(self, event: dict) -> dict:
        """``event`` as the plant's sensors read it (``Plant.sense``); as is without a plant.
        The replay passes every event through this before publishing it."""
        return self.plant.sense(event) if self.plant is not None else event

    def _on_message(self, client, _userdata, message) -> None:
        try:
            ack = self.handle(message.topic, message.payload)
        finally:
            if self.plant is not None:
                connection.close()  # the plant read the database on this long-lived thread
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
