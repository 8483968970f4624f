"""Sending a command to an asset over MQTT and waiting for the asset to acknowledge it.

Topics (prefix ``MQTT_TOPIC_PREFIX``): the command goes to ``opstwin/{twin}/{asset}/command``
(QoS 1) as ``{"command_id", "action", "parameters", "issued_at"}``; the asset answers on
``opstwin/{twin}/{asset}/command/ack`` with ``{"command_id", "status": "ok" | "rejected" |
"error", "detail", "at"}``. Two facts are recorded separately:

- delivery: the broker acknowledged the QoS 1 publish (PUBACK) within
  ``MQTT_COMMAND_ACK_TIMEOUT`` seconds;
- effect: the asset acknowledged this ``command_id`` with status ``ok`` within
  ``POLICY_COMMAND_EFFECT_TIMEOUT`` seconds. Only an effect makes an execution succeed.
"""

from __future__ import annotations

import json
import threading
import time

from django.conf import settings
from django.utils import timezone

from opstwin_site.mqtt import connect_client, make_client, topic


class _AckWaiter:
    """Collects the first ack carrying ``command_id`` (other ids and bad JSON are ignored)."""

    def __init__(self, command_id: str) -> None:
        self.command_id, self.ack, self.event = command_id, None, threading.Event()
        self.subscribed = threading.Event()

    def on_message(self, _client, _userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("command_id") == self.command_id:
            self.ack = body
            self.event.set()

    def on_subscribe(self, *_args) -> None:
        self.subscribed.set()


def _effect(waiter: _AckWaiter, started: float) -> dict:
    if not waiter.event.wait(settings.POLICY_COMMAND_EFFECT_TIMEOUT):
        timeout = settings.POLICY_COMMAND_EFFECT_TIMEOUT
        return {"ok": False, "status": "timeout",
                "detail": f"no ack from the asset within {timeout} s"}
    ack = waiter.ack
    return {"ok": ack.get("status") == "ok", "status": str(ack.get("status")),
            "detail": str(ack.get("detail", "")), "latency_s": round(time.monotonic() - started, 4)}


def _exchange(url: str, command_topic: str, ack_topic: str, payload: dict) -> tuple[dict, dict]:
    waiter, started = _AckWaiter(payload["command_id"]), time.monotonic()
    client = make_client(url)
    client.on_message, client.on_subscribe = waiter.on_message, waiter.on_subscribe
    try:
        connect_client(client, url)
        client.loop_start()
        client.subscribe(ack_topic, qos=1)
        waiter.subscribed.wait(settings.MQTT_COMMAND_ACK_TIMEOUT)
        info = client.publish(command_topic, json.dumps(payload), qos=1)
        info.wait_for_publish(timeout=settings.MQTT_COMMAND_ACK_TIMEOUT)
        delivered = info.is_published()
        delivery = {"ok": delivered, "latency_s": round(time.monotonic() - started, 4),
                    "detail": "broker acknowledged (PUBACK)" if delivered
                    else "no PUBACK before timeout"}
        effect = _effect(waiter, started) if delivered else {
            "ok": False, "status": "not_sent", "detail": "not delivered to the broker"}
    except (OSError, RuntimeError, ValueError) as exc:
        delivery = {"ok": False, "detail": f"broker unreachable: {exc}"}
        effect = {"ok": False, "status": "not_sent", "detail": "not delivered to the broker"}
    finally:
        client.disconnect()  # before loop_stop: wakes the network loop instead of waiting 1 s
        client.loop_stop()
    return delivery, effect


def send_command(*, twin_slug: str, asset_slug: str, command_id: str, action: str,
                 parameters: dict) -> dict:
    """Publish one command and wait for PUBACK and the asset's ack. Never raises.

    Returns (action.v1 ``execution``): ``{"command_id", "topic", "ack_topic", "payload",
    "delivery": {"ok", "detail", "latency_s"}, "effect": {"ok", "status", "detail"},
    "delivered": bool, "acknowledged": bool, "at"}``.
    """
    command_topic = topic(twin_slug, asset_slug, "command")
    ack_topic = f"{command_topic}/ack"
    payload = {"command_id": command_id, "action": action, "parameters": parameters,
               "issued_at": timezone.now().isoformat()}
    url = settings.MQTT_URL
    if url:
        delivery, effect = _exchange(url, command_topic, ack_topic, payload)
    else:
        delivery = {"ok": False, "detail": "no MQTT broker configured (MQTT_URL unset)"}
        effect = {"ok": False, "status": "not_sent", "detail": "not delivered to the broker"}
    return {"command_id": command_id, "topic": command_topic, "ack_topic": ack_topic,
            "payload": payload, "delivery": delivery, "effect": effect,
            "delivered": delivery["ok"], "acknowledged": effect["ok"],
            "at": timezone.now().isoformat()}
