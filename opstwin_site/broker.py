"""An embedded MQTT broker (amqtt) for the zero-configuration demo.

Only used when ``MQTT_URL`` is unset: the demo starts it on 127.0.0.1 so the whole loop still
runs over real MQTT (QoS 1, manual acks). amqtt speaks MQTT 3.1.1, so the URL it gets carries
``?protocol=311`` and no shared subscriptions are used with it. Production uses Mosquitto.
"""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt broker running on its own event loop in a daemon thread.

    amqtt waits at most 5 s (fixed) for a subscriber's PUBACK and has no per-client in-flight
    limit (MQTT 3.1.1 has no Receive Maximum): it sends every message on at once. A subscriber
    that acks after its commit must therefore never hold more than ~5 s of work; publishers
    that can outrun it bound what they have in flight end to end (``demo.replay``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1884) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._broker = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?protocol=311"

    def start(self, timeout: float = 10.0) -> str:
        """Start the broker; return its URL. Raises RuntimeError if it does not come up."""
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error:
            raise RuntimeError(f"embedded MQTT broker did not start: {self._error}")
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the broker down (closing its clients' connections) and end its thread.

        Safe to call when it never started; a shutdown that fails or hangs is logged.
        """
        if self._broker is None or self._thread is None or not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            done.result(timeout)
        except Exception as exc:  # reported; the thread is stopped anyway
            log.warning("embedded MQTT broker did not shut down cleanly: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

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
            self._broker = broker
        except BaseException as exc:  # reported to start() and re-raised there
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        # stop(): cancel what is left (client handlers) and let it finish before closing, so
        # nothing is destroyed while pending.
        left = asyncio.all_tasks(self._loop)
        for task in left:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self._loop.close()
