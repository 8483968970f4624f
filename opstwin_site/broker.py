"""An embedded MQTT broker (amqtt) for the zero-configuration demo.

Only used when ``MQTT_URL`` is unset: the demo starts it on 127.0.0.1 so the whole loop still
runs over real MQTT (QoS 1, manual acks). amqtt speaks MQTT 3.1.1, so the URL it gets carries
``?protocol=311`` and no shared subscriptions are used with it. Production uses Mosquitto.
"""

from __future__ import annotations

import asyncio
import threading


class EmbeddedBroker:
    """amqtt broker running on its own event loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1884) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?protocol=311"

    def start(self, timeout: float = 10.0) -> str:
        """Start the broker; return its URL. Raises RuntimeError if it does not come up."""
        threading.Thread(target=self._run, name="embedded-mqtt", daemon=True).start()
        if not self._started.wait(timeout) or self._error:
            raise RuntimeError(f"embedded MQTT broker did not start: {self._error}")
        return self.url

    def _run(self) -> None:
        from amqtt.broker import Broker

        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(broker.start())
        except BaseException as exc:  # reported to start() and re-raised there
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
