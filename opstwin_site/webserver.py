"""How OpsTwin serves its ASGI app: uvicorn with uvloop, httptools and websockets (sans-I/O).

One argument list for every place that starts the web process (the demo, the live-server
tests, the benchmarks); ``docker/Dockerfile``'s CMD spells out the same options for the image.

Why these options:
- uvicorn has flow control built in: ``await send(...)`` waits while the client's socket is
  full, so an SSE or WebSocket stream that a client stops reading stops being written to
  (its bounded queue then overflows and the stream ends with ``aiw.reconnect``).
- ``--no-server-header``: no ``Server: uvicorn`` banner (``tests/test_health.py``).
- ``--ws-per-message-deflate false``: no WebSocket compression (RFC 7692), which browsers
  always ask for and uvicorn grants by default. It compresses every feed event once per
  socket (a zlib context each), where the event's text is otherwise encoded once and shared:
  with clients that ask for it, the server's CPU per delivered event was 1.6-1.7x
  (``benchmarks/fanout.py --transport ws --deflate``, 360 streams, 19,400 deliveries/s).
  The price: events (a few hundred bytes of JSON each) travel uncompressed.
- ``--lifespan off``: Django has no lifespan handlers (channels' router would refuse the scope).
- ``--timeout-graceful-shutdown``: streams never end by themselves, so on SIGTERM the server
  closes them after this many seconds instead of waiting for the clients.
"""

from __future__ import annotations

import sys

APPLICATION = "opstwin_site.asgi:application"
GRACEFUL_SHUTDOWN_SECONDS = 5


def command(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    proxy_headers: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The argv that serves the app on ``host``:``port`` (TCP port number) with uvicorn.

    ``proxy_headers`` trusts ``X-Forwarded-For``/``-Proto`` from any peer: only for a process
    reachable solely through a reverse proxy. ``python`` is the interpreter to run it with.
    """
    argv = [
        python,
        "-m",
        "uvicorn",
        APPLICATION,
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        "--ws-per-message-deflate",
        "false",
        "--lifespan",
        "off",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN_SECONDS),
    ]
    if proxy_headers:
        argv += ["--proxy-headers", "--forwarded-allow-ips", "*"]
    return argv
