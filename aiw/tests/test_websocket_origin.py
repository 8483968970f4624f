"""Cookie-session WebSockets accept the page's own origin and CSRF_TRUSTED_ORIGINS only,
whatever ALLOWED_HOSTS says (cross-site WebSocket hijacking)."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from opstwin_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _handshake(client, origin: str | None, host: str = "testserver") -> bool:
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
               (b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    communicator = WebsocketCommunicator(application, "/ws/feed", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


# (Origin header, accepted) with ALLOWED_HOSTS = ["*"]
ORIGINS = [
    ("http://testserver", True),
    ("https://console.example", True),  # listed in CSRF_TRUSTED_ORIGINS
    ("http://evil.example", False),
    ("null", False),
    (None, False),
    ("http://testserver.evil.example", False),
    ("file://testserver", False),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("origin", "accepted"), ORIGINS)
async def test_a_cookie_session_needs_its_own_or_a_trusted_origin(
    viewer_client, settings, origin, accepted
):
    settings.ALLOWED_HOSTS = ["*"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example"]
    assert await _handshake(viewer_client, origin) is accepted
