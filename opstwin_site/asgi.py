"""ASGI entry point: HTTP (including SSE) through Django, the WebSocket feed as a plain ASGI app
(``aiw.websocket``) behind channels' routers.

WebSockets authenticate with a session cookie (Origin checked by ``TokenOrOriginValidator``) or
with ``Authorization: Bearer <agent token>`` (no Origin needed: not ambient authority).
Served by uvicorn (``opstwin_site/webserver.py``), whose ``send`` waits while a client's socket
is full: streams get backpressure from the server, not from a patch.
"""

import os

import django
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
django.setup(set_prefix=False)

from opstwin_site.tracing import setup_tracing  # noqa: E402 - needs Django set up first

# Before the handler builds its middleware chain: tracing adds its own middleware.
setup_tracing("web")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from aiw.authentication import TokenOrOriginValidator  # noqa: E402
from aiw.websocket import feed_socket  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": TokenOrOriginValidator(URLRouter([path("ws/feed", feed_socket)])),
    }
)
