"""The WebSocket feed: authenticated, resumable, filtered, pushed on commit (same as SSE)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from guardian.shortcuts import assign_perm
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from aiw import services
from aiw.feed import encode_cursor
from aiw.models import AgentToken
from aiw.tests import raw
from aiw.tests.conftest import bearer, touch
from opstwin_site.asgi import application
from twins.ledger import record_change
from twins.models import Twin
from twins.schemas import errors

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


def _ws_url(base: str, **query) -> str:
    return base.replace("http://", "ws://") + "/ws/feed?" + urlencode(query)


def _frames(ws, count: int) -> list[dict]:
    return [json.loads(ws.recv(timeout=10)) for _ in range(count)]


def test_an_agent_token_follows_the_same_events_as_diff_with_filters(
    aiw_server, twin, agent_token
):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    assign_perm("twins.view_twin", AgentToken.objects.get().user, other)
    touch(other)
    mine = touch(twin, 2)
    query = {"since": "0", "twin": "plant", "types": "twin.updated"}
    with connect(_ws_url(aiw_server, **query), additional_headers=bearer(agent_token)) as ws:
        frames = _frames(ws, 2)
        live = touch(twin) + touch(other) + touch(twin)
        frames += _frames(ws, 2)
    _, _, body = raw.get(aiw_server, "/diff?" + urlencode(query), bearer(agent_token))
    diff_ids = [e["id"] for e in json.loads(body)["events"]]
    assert [f["id"] for f in frames] == mine + [live[0], live[2]] == diff_ids
    assert all(errors("change-event.v1", f) == [] for f in frames)


def test_a_client_asking_for_compression_gets_uncompressed_frames(aiw_server, agent_token):
    """Browsers offer permessage-deflate; the server declines it (``opstwin_site.webserver``:
    compressing every event once per socket costs more CPU than the stream itself)."""
    with connect(_ws_url(aiw_server, since="0"), additional_headers=bearer(agent_token)) as ws:
        offered = ws.request.headers["Sec-WebSocket-Extensions"]
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
    assert offered.startswith("permessage-deflate")
    assert agreed is None


def test_a_reconnect_with_the_last_cursor_continues_without_gaps_or_repeats(
    aiw_server, twin, agent_token
):
    produced = touch(twin, 3)
    with connect(_ws_url(aiw_server, since="0"), additional_headers=bearer(agent_token)) as ws:
        first = _frames(ws, 2)
    with connect(_ws_url(aiw_server, since=first[-1]["cursor"]),
                 additional_headers=bearer(agent_token)) as ws:
        rest = _frames(ws, 1)
        produced += touch(twin)
        rest += _frames(ws, 1)
    assert [f["id"] for f in first + rest] == produced


def test_an_unknown_cursor_gets_a_problem_frame_and_close_code_4410(
    aiw_server, twin, agent_token
):
    with connect(_ws_url(aiw_server, since="garbage!"),
                 additional_headers=bearer(agent_token)) as ws:
        message = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        code = ws.close_code
    assert message["type"] == "aiw.error" and message["problem"]["status"] == 410
    assert errors("stream-control.v1", message) == []
    assert code == 4410


def test_a_revoked_token_cannot_open_a_socket(aiw_server, agent_token):
    services.revoke_token(AgentToken.objects.get().pk)
    with pytest.raises(InvalidStatus) as refused:
        connect(_ws_url(aiw_server), additional_headers=bearer(agent_token))
    assert refused.value.response.status_code == 403


def test_a_token_needs_no_origin_but_a_cookie_session_does(aiw_server, twin, agent_token):
    with connect(_ws_url(aiw_server, since="0"), additional_headers=bearer(agent_token)) as ws:
        (event_id,) = touch(twin)
        assert json.loads(ws.recv(timeout=10))["id"] == event_id
    with pytest.raises(InvalidStatus):
        connect(_ws_url(aiw_server), additional_headers={"Cookie": "sessionid=x",
                                                         "Origin": "http://evil.example"})


def test_a_slow_socket_is_cut_off_and_its_last_cursor_loses_nothing(
    aiw_server, twin, agent_token
):
    """GIVEN a WebSocket client that stops reading, WHEN far more events arrive than its
    socket and queue hold, THEN the server ends the stream (aiw.reconnect and close 4408; a
    client that still reads nothing may lose that goodbye to the closing-handshake timeout)
    and resuming /diff from the last event it did receive yields the rest exactly once."""
    (first,) = touch(twin)
    # A raw socket with a tiny receive buffer that reads nothing, as in the SSE test: a client
    # library keeps reading into its own buffers (and a loopback socket's default buffer is
    # auto-tuned to megabytes), so the server would never see a slow client.
    path = "/ws/feed?" + urlencode({"since": encode_cursor(first - 1)})
    sock = raw.stalled_websocket(aiw_server, path, bearer(agent_token))
    head = raw.read_until(sock, b'"id":%d' % first)  # live now
    with transaction.atomic():
        produced = touch(twin, 300, pad=16_000)
    time.sleep(3)  # the client reads nothing: socket, then queue, fill up
    messages, close_code = raw.websocket_messages(head + raw.read_until_closed(sock))
    frames = [json.loads(m) for m in messages]
    assert frames[0]["id"] == first
    frames = frames[1:]
    assert close_code in (4408, None)  # None: the goodbye was lost to the full socket
    sent = [f["id"] for f in frames if f.get("type") == "twin.updated"]
    goodbye = [f for f in frames if f.get("type") == "aiw.reconnect"]
    assert 0 < len(sent) < len(produced)
    assert all(f["cursor"] == encode_cursor(sent[-1]) for f in goodbye)
    _, _, body = raw.get(aiw_server, f"/diff?since={encode_cursor(sent[-1])}&limit=1000",
                         bearer(agent_token))
    assert sent + [e["id"] for e in json.loads(body)["events"]] == produced
