"""Publishing an action's command to its asset over MQTT (QoS 1)."""

from __future__ import annotations

import json
import logging
import time

from django.conf import settings
from django.utils import timezone

from opstwin_site.mqtt import connect_client, make_client, topic

log = logging.getLogger(__name__)


def publish_command(proposal) -> dict:
    """Publish ``proposal``'s command on ``opstwin/{twin}/{asset}/command`` and wait for PUBACK.

    Returns the outcome (action.v1 ``delivery``): ``{"topic", "payload", "delivered": bool,
    "detail", "at"}``. ``delivered`` means the broker acknowledged the QoS 1 publish within
    ``MQTT_COMMAND_ACK_TIMEOUT`` seconds. Never raises: an unreachable broker is an outcome.
    """
    command_topic = topic(proposal.twin.slug, proposal.asset.slug, "command")
    payload = {
        "command_id": f"proposal-{proposal.pk}", "action": proposal.action,
        "parameters": proposal.parameters, "issued_at": timezone.now().isoformat(),
    }
    outcome = {"topic": command_topic, "payload": payload, "delivered": False}
    url = settings.MQTT_URL
    if not url:
        return outcome | {"detail": "no MQTT broker configured (MQTT_URL unset)",
                          "at": timezone.now().isoformat()}
    client = make_client(url)
    started = time.monotonic()
    try:
        connect_client(client, url)
        client.loop_start()
        info = client.publish(command_topic, json.dumps(payload), qos=1)
        info.wait_for_publish(timeout=settings.MQTT_COMMAND_ACK_TIMEOUT)
        delivered = info.is_published()
        detail = "broker acknowledged (PUBACK)" if delivered else "no PUBACK before timeout"
    except (OSError, RuntimeError, ValueError) as exc:
        delivered, detail = False, f"broker unreachable: {exc}"
    finally:
        client.loop_stop()
        client.disconnect()
    return outcome | {"delivered": delivered, "detail": detail, "at": timezone.now().isoformat(),
                      "latency_s": round(time.monotonic() - started, 4)}
