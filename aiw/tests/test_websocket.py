"""The WebSocket feed: authenticated, resumable, pushed on commit."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

from aiw.feed import encode_cursor
from opstwin_site.asgi import application
from policy.audit import record_change

pytestmark = pytest.mark.django_db(transaction=True)


def _touch(twin) -> int:
    with transaction.atomic():
        return record_change(actor="test", action="twin.touch", resource_type="twin",
                             resource_id=twin.pk, operation="updated", twin=twin,
                             after={"id": twin.pk}).id


async def _connect(client, path: str) -> WebsocketCommunicator:
    cookie = client.cookies["sessionid"].value
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"cookie", f"sessionid={cookie}".encode()),
                                    (b"origin", b"http://testserver"),
                                    (b"host", b"testserver")])
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.asyncio
async def test_it_replays_from_the_cursor_then_pushes_new_commits(viewer_client, twin):
    first = await sync_to_async(_touch)(twin)
    second = await sync_to_async(_touch)(twin)
    ws = await _connect(viewer_client, f"/ws/feed?since={encode_cursor(first)}")
    frame = await ws.receive_json_from(timeout=5)
    assert frame["id"] == second
    third = await sync_to_async(_touch)(twin)
    frame = await ws.receive_json_from(timeout=5)
    assert frame["id"] == third and frame["cursor"] == encode_cursor(third)
    await ws.disconnect()


@pytest.mark.asyncio
async def test_it_refuses_anonymous_connections():
    communicator = WebsocketCommunicator(application, "/ws/feed",
                                         headers=[(b"origin", b"http://testserver")])
    connected, code = await communicator.connect()
    assert not connected or code == 4401
    await communicator.disconnect()
