"""A paho MQTT client that reads the socket in bulk (no Django imports: publishers use it too)."""

from __future__ import annotations

import paho.mqtt.client as mqtt


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket 64 KiB at a time.

    paho reads each packet with several tiny ``recv`` calls and handles one packet per
    ``select``: at thousands of messages per second that is most of the network thread's work.
    Here ``_sock_recv`` serves those small reads from a buffer and ``loop_read`` keeps going
    while buffered bytes remain (otherwise a whole buffered packet could wait for the next
    ``select``). The buffer is dropped with the socket, so a reconnect never sees stale bytes.
    Relies on paho 2.x internals (``_sock_recv``, ``_sock_close``); covered by the MQTT tests.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._rbuf, self._rpos = b"", 0
        super().__init__(*args, **kwargs)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            chunk = super()._sock_recv(65536)
            if not chunk:
                return chunk
            self._rbuf, self._rpos = chunk, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf) \
                and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc
