"""MQTT plumbing shared by the ingest subscriber, the command publisher and the demo.

Topics: ``{prefix}/{twin}/{asset}/telemetry`` (sensors → OpsTwin) and
``{prefix}/{twin}/{asset}/command`` (OpsTwin → asset), ``prefix`` = ``MQTT_TOPIC_PREFIX``.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings


def topic(twin_slug: str, asset_slug: str, channel: str) -> str:
    """``opstwin/{twin}/{asset}/{channel}`` with the configured prefix."""
    return f"{settings.MQTT_TOPIC_PREFIX}/{twin_slug}/{asset_slug}/{channel}"


def protocol_for(url: str) -> int:
    """MQTT v5 unless the URL asks for 3.1.1 with ``?protocol=311`` (the embedded broker)."""
    return mqtt.MQTTv311 if "protocol=311" in (urlsplit(url).query or "") else mqtt.MQTTv5


def make_client(
    url: str, *, client_id: str | None = None, manual_ack: bool = False,
) -> mqtt.Client:
    """A connected-on-demand paho client for ``url`` (``mqtt://user:pass@host:port``).

    The caller calls ``connect_client`` and starts the network loop. ``manual_ack`` makes
    QoS 1 messages wait for an explicit ``client.ack(mid, qos)``.
    """
    parts = urlsplit(url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"opstwin-{uuid.uuid4().hex[:12]}",
        protocol=protocol_for(url),
        manual_ack=manual_ack,
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set()
    return client


def connect_client(client: mqtt.Client, url: str, *, clean_start: bool = True) -> None:
    """Connect ``client`` to the broker of ``url`` (blocking; raises OSError if unreachable)."""
    parts = urlsplit(url)
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    if client.protocol == mqtt.MQTTv5:
        client.connect(parts.hostname, port, keepalive=30, clean_start=clean_start)
    else:
        client.connect(parts.hostname, port, keepalive=30)
