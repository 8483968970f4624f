"""A simulated asset for the demo: it takes commands over MQTT and acknowledges them.

It subscribes to ``{prefix}/{twin}/+/command`` (QoS 1) and answers every command on
``{prefix}/{twin}/{asset}/command/ack`` with ``{"command_id", "status", "detail", "at"}``:
``ok`` for an action a pump understands (``ACTIONS``), ``rejected`` for anything else or a
payload that is not a command. It does not change the replayed telemetry: SKAB is a
recording, so the demo's verification step compares the simulated band with what the
recording did next.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime

from django.conf import settings

from opstwin_site.mqtt import connect_client, make_client

log = logging.getLogger(__name__)
ACTIONS = frozenset({"open_valve", "reduce_load", "hold", "emergency_stop", "restore_load",
                     "restore_valve"})


class SimulatedDevice:
    """Every asset of one twin, as far as commands go. ``received`` lists commands seen."""

    def __init__(self, mqtt_url: str, twin_slug: str) -> None:
        self.url, self.twin_slug, self.received = mqtt_url, twin_slug, []
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
    def answer(payload: bytes) -> dict:
        """The ack for one command payload (pure: no I/O)."""
        try:
            command = json.loads(payload)
        except ValueError:
            command = None
        if not isinstance(command, dict) or not command.get("command_id"):
            return {"command_id": None, "status": "rejected", "detail": "not a command"}
        ok = command.get("action") in ACTIONS
        return {"command_id": command["command_id"], "status": "ok" if ok else "rejected",
                "detail": f"{command.get('action')} {'applied' if ok else 'unknown action'}"}

    def _on_message(self, client, _userdata, message) -> None:
        ack = self.answer(message.payload) | {"at": datetime.now(UTC).isoformat()}
        self.received.append({"topic": message.topic, "ack": ack})
        client.publish(f"{message.topic}/ack", json.dumps(ack), qos=1)
        log.info("device acked %s: %s", ack["command_id"], ack["status"])
