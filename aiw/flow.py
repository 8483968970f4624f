"""Send-side backpressure for SSE under daphne.

ASGI servers with flow control (uvicorn) make ``await send(...)`` wait while the socket is
full. Daphne does not: it copies every body chunk into Twisted's unbounded write buffer, so a
stalled client would make the server buffer forever and a stream could never tell it is slow.
Twisted itself knows: a transport whose buffer passes its limit pauses its registered push
producer. ``install()`` (called from ``opstwin_site/asgi.py``) wraps daphne's
``Server.create_application`` to put an ``aiw.flow`` entry in each HTTP and WebSocket
scope's extensions; a stream calls ``attach()`` to register a :class:`TransportFlow` as the
producer of its request (HTTP) or socket (WebSocket) and then reads ``paused``. Elsewhere
(in-process tests, other servers) the entry is absent and streams run without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
EXTENSION = "aiw.flow"


class TransportFlow:
    """A Twisted push producer whose pause/resume calls mirror into an asyncio Event."""

    def __init__(self, request) -> None:
        self._request = request
        self.resumed = asyncio.Event()
        self.resumed.set()
        self._attached = False

    @property
    def paused(self) -> bool:
        """True while the transport's write buffer is over its limit."""
        return not self.resumed.is_set()

    def attach(self) -> None:
        """Register as the request's streaming producer (once)."""
        if not self._attached:
            self._request.registerProducer(self, True)
            self._attached = True

    def detach(self) -> None:
        """Unregister (required before the request finishes); safe after a disconnect."""
        if self._attached:
            self._attached = False
            with contextlib.suppress(AttributeError, RuntimeError):  # connection gone
                self._request.unregisterProducer()

    # Twisted IPushProducer
    def pauseProducing(self) -> None:
        self.resumed.clear()

    def resumeProducing(self) -> None:
        self.resumed.set()

    def stopProducing(self) -> None:
        self.resumed.set()


class _Takeover:
    """A WebSocket's TCP transport as a producer target. The HTTP channel that handled the
    upgrade is still registered on it and no longer needs to hear about the buffer."""

    def __init__(self, transport) -> None:
        self.transport = transport

    def registerProducer(self, producer, streaming: bool) -> None:  # noqa: N802 - Twisted API
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted API
        self.transport.unregisterProducer()


def flow_of(scope: dict) -> TransportFlow | None:
    """The TransportFlow of an ASGI scope, if the server provides one."""
    return (scope.get("extensions") or {}).get(EXTENSION)


def _wrap(original: Callable) -> Callable:
    def create_application(self, protocol, scope):
        target = {"http": lambda: protocol,
                  "websocket": lambda: _Takeover(protocol.transport)}.get(scope.get("type"))
        if target is not None:
            extensions = dict(scope.get("extensions") or {})
            extensions[EXTENSION] = TransportFlow(target())
            scope = dict(scope, extensions=extensions)
        return original(self, protocol, scope)

    create_application.aiw_flow = True
    return create_application


def install() -> None:
    """Patch daphne's Server (idempotent; a no-op when daphne is not importable)."""
    try:
        from daphne.server import Server
    except ImportError:
        return
    if not getattr(Server.create_application, "aiw_flow", False):
        Server.create_application = _wrap(Server.create_application)
