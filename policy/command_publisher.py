"""Sending a command to an asset over MQTT and waiting for the asset to acknowledge it.

Topics (prefix ``MQTT_TOPIC_PREFIX``): the command goes to ``opstwin/{twin}/{asset}/command``
(QoS 1) as ``{"command_id", "action", "parameters", "issued_at"}``; the asset answers on
``opstwin/{twin}/{asset}/command/ack`` with ``{"command_id", "status": "ok" | "rejected" |
"error", "detail", "at"}`` and optionally ``effective_from`` (ISO 8601 with offset, on the
asset's telemetry clock: its readings after that instant answer the command; verification's
window starts there, so readings already on their way are not judged). Two facts are
recorded separately:

- delivery: the broker acknowledged the QoS 1 publish (PUBACK) within
  ``MQTT_COMMAND_ACK_TIMEOUT`` seconds;
- effect: the asset acknowledged this ``command_id`` with status ``ok`` within
  ``POLICY_COMMAND_EFFECT_TIMEOUT`` seconds. Only an effect makes an execution succeed.

One connection per process: ``CommandChannel`` is created on first use, kept, and shared by
every thread of the process (Celery worker, web process in eager mode, the demo). It holds a
persistent subscription to every ack topic (``{prefix}/+/+/command/ack``) and hands each ack
to the waiters registered under its ``command_id``. paho's network thread reconnects a dropped
connection and ``on_connect`` subscribes again; a forked child (Celery prefork) builds its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from twins.mqtt import connect_client, make_client, topic

log = logging.getLogger(__name__)


class _AckWaiter:
    """The first ack of one ``command_id``, handed over by the channel's network thread."""

    def __init__(self) -> None:
        self.ack: dict | None = None
        self.event = threading.Event()

    def deliver(self, ack: dict) -> None:
        if self.ack is None:
            self.ack = ack
            self.event.set()


class CommandChannel:
    """One MQTT connection of this process for commands and their acks (thread-safe).

    ``url``/``prefix`` are the broker URL and topic prefix it was built for, ``client_id`` its
    MQTT client id, ``connects`` how many times it (re)connected. Raises OSError from the
    constructor when the broker is unreachable (nothing is kept then).
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix, self.pid = url, prefix, os.getpid()
        self.client_id, self.connects = f"opstwin-cmd-{uuid.uuid4().hex[:12]}", 0
        self.ack_filter = f"{prefix}/+/+/command/ack"
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_AckWaiter]] = {}
        self._ready = threading.Event()  # connected and the ack subscription confirmed
        self._client = make_client(url, client_id=self.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        connect_client(self._client, url)
        self._client.loop_start()

    # paho callbacks (network thread) -----------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties=None) -> None:
        if not reason_code.is_failure:
            self.connects += 1
            client.subscribe(self.ack_filter, qos=1)

    def _on_subscribe(self, *_args) -> None:
        self._ready.set()

    def _on_disconnect(self, *_args) -> None:
        self._ready.clear()

    def _on_message(self, _client, _userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(body, dict) or not isinstance(body.get("command_id"), str):
            return
        with self._lock:
            waiters = list(self._waiters.get(body["command_id"], ()))
        for waiter in waiters:
            waiter.deliver(body)

    # callers ------------------------------------------------------------------------------
    def exchange(self, command_topic: str, payload: dict) -> tuple[dict, dict]:
        """Publish ``payload`` (QoS 1) and wait for PUBACK, then for the asset's ack.

        Returns ``(delivery, effect)`` as described in the module docstring. Never raises.
        """
        waiter, started = _AckWaiter(), time.monotonic()
        command_id = payload["command_id"]
        with self._lock:  # registered before publishing: an early ack is not missed
            self._waiters.setdefault(command_id, []).append(waiter)
        try:
            return self._publish_and_wait(command_topic, payload, waiter, started)
        finally:
            with self._lock:
                self._waiters[command_id].remove(waiter)
                if not self._waiters[command_id]:
                    del self._waiters[command_id]

    def _publish_and_wait(self, command_topic, payload, waiter, started) -> tuple[dict, dict]:
        not_sent = {"ok": False, "status": "not_sent", "detail": "not delivered to the broker"}
        if not self._ready.wait(settings.MQTT_COMMAND_ACK_TIMEOUT):
            return {"ok": False, "detail": "broker unreachable: not connected and subscribed "
                                           f"within {settings.MQTT_COMMAND_ACK_TIMEOUT} s"}, \
                not_sent
        try:
            info = self._client.publish(command_topic, json.dumps(payload), qos=1)
            info.wait_for_publish(timeout=settings.MQTT_COMMAND_ACK_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            return {"ok": False, "detail": f"broker unreachable: {exc}"}, not_sent
        delivered = info.is_published()
        delivery = {"ok": delivered, "latency_s": round(time.monotonic() - started, 4),
                    "detail": "broker acknowledged (PUBACK)" if delivered
                    else "no PUBACK before timeout"}
        return delivery, (_effect(waiter, started) if delivered else not_sent)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()  # before loop_stop: wakes the network loop at once
        self._client.loop_stop()


def _effect(waiter: _AckWaiter, started: float) -> dict:
    if not waiter.event.wait(settings.POLICY_COMMAND_EFFECT_TIMEOUT):
        timeout = settings.POLICY_COMMAND_EFFECT_TIMEOUT
        return {"ok": False, "status": "timeout",
                "detail": f"no ack from the asset within {timeout} s"}
    ack = waiter.ack
    effect = {"ok": ack.get("status") == "ok", "status": str(ack.get("status")),
              "detail": str(ack.get("detail", "")),
              "latency_s": round(time.monotonic() - started, 4)}
    effective_from = _instant(ack.get("effective_from"))
    if effective_from is not None:
        effect["effective_from"] = effective_from.isoformat()
    return effect


def _instant(value) -> datetime | None:
    """``value`` as an aware datetime if it is ISO 8601 text with an offset, else None (an
    ack's optional field that is malformed is ignored, never fatal)."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


_channel: CommandChannel | None = None
_channel_lock = threading.Lock()


def channel() -> CommandChannel:
    """This process's command channel for the configured broker and prefix (created lazily).

    A channel built for another broker URL or prefix (settings changed, as tests do), or
    inherited from a parent process through fork, is closed or dropped and replaced. Raises
    OSError/ValueError when the broker is unreachable; the next call tries again.
    """
    global _channel
    url, prefix = settings.MQTT_URL, settings.MQTT_TOPIC_PREFIX
    with _channel_lock:
        current = _channel
        if current is not None and (current.url, current.prefix, current.pid) == (
                url, prefix, os.getpid()):
            return current
        if current is not None and current.pid == os.getpid():
            current.close()
        _channel = None
        _channel = CommandChannel(url, prefix)
        return _channel


def close_channel() -> None:
    """Close this process's channel if it has one (shutdown, tests)."""
    global _channel
    with _channel_lock:
        if _channel is not None and _channel.pid == os.getpid():
            _channel.close()
        _channel = None


def send_command(*, twin_slug: str, asset_slug: str, command_id: str, action: str,
                 parameters: dict, expires_at: str | None = None) -> dict:
    """Publish one command and wait for PUBACK and the asset's ack. Never raises.

    ``command_id`` is stable across re-sends of one command, so the asset can de-duplicate.
    ``expires_at`` (ISO 8601) is when the asset must stop applying this copy of the command
    (one that reaches it later, e.g. re-sent by the broker after a reconnect, is refused), so
    a command given up on cannot take effect afterwards.
    Returns (action.v1 outcome fields): ``{"command_id", "topic", "ack_topic", "payload",
    "delivery": {"ok", "detail", "latency_s"}, "effect": {"ok", "status", "detail"},
    "delivered": bool, "acknowledged": bool, "at"}``.
    """
    command_topic = topic(twin_slug, asset_slug, "command")
    ack_topic = f"{command_topic}/ack"
    payload = {"command_id": command_id, "action": action, "parameters": parameters,
               "issued_at": timezone.now().isoformat()}
    if expires_at:
        payload["expires_at"] = expires_at
    not_sent = {"ok": False, "status": "not_sent", "detail": "not delivered to the broker"}
    if not settings.MQTT_URL:
        delivery = {"ok": False, "detail": "no MQTT broker configured (MQTT_URL unset)"}
        effect = not_sent
    else:
        try:
            delivery, effect = channel().exchange(command_topic, payload)
        except (OSError, ValueError) as exc:
            delivery, effect = {"ok": False, "detail": f"broker unreachable: {exc}"}, not_sent
    return {"command_id": command_id, "topic": command_topic, "ack_topic": ack_topic,
            "payload": payload, "delivery": delivery, "effect": effect,
            "delivered": delivery["ok"], "acknowledged": effect["ok"],
            "at": timezone.now().isoformat()}
