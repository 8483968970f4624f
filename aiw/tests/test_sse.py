"""GET /subscribe against a live uvicorn server: framing, resume, filters, limits, slow clients."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import httpx
import pytest
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm
from httpx_sse import connect_sse

from aiw import services
from aiw.feed import encode_cursor
from aiw.models import AgentToken
from aiw.tests import raw
from aiw.tests.conftest import bearer, touch
from twins.models import Twin
from twins.schemas import errors

pytestmark = pytest.mark.django_db(transaction=True)


def _events(frames: list[dict]) -> list[dict]:
    return [json.loads(f["data"]) for f in frames if "data" in f]


def test_each_event_is_one_frame_with_cursor_id_type_event_and_json_data(
    aiw_server, twin, agent_token
):
    first, second = touch(twin, 2)
    stream = raw.open_stream(aiw_server, "/subscribe?since=0", bearer(agent_token))
    assert stream.status == 200
    assert stream.getheader("Content-Type") == "text/event-stream"
    assert stream.getheader("Cache-Control") == "no-cache"
    frames = raw.read_frames(stream, 2, events_only=True)
    assert [f["id"] for f in frames] == [encode_cursor(first), encode_cursor(second)]
    assert {f["event"] for f in frames} == {"twin.updated"}
    for frame in frames:
        payload = json.loads(frame["data"])
        assert payload["cursor"] == frame["id"]
        assert errors("change-event.v1", payload) == []
    (third,) = touch(twin)  # live, after the catch-up
    assert raw.read_frames(stream, 1, events_only=True)[0]["id"] == encode_cursor(third)
    stream.close()


def test_the_stream_opens_with_a_retry_hint_and_sends_comment_heartbeats(
    aiw_server, twin, agent_token
):
    stream = raw.open_stream(aiw_server, "/subscribe", bearer(agent_token))
    opening, beat = raw.read_frames(stream, 2)
    assert opening == {"retry": "2000"}
    assert beat == {"comment": "keep-alive"}
    stream.close()


def test_an_sse_client_library_resumes_from_last_event_id(aiw_server, twin, agent_token):
    touch(twin, 2)
    with httpx.Client(base_url=aiw_server, headers=bearer(agent_token), timeout=10) as http:
        with connect_sse(http, "GET", "/subscribe?since=0") as source:
            seen = []
            for sse in source.iter_sse():
                if not sse.data:  # the retry hint
                    continue
                seen.append(sse)
                if len(seen) == 2:
                    break
        later = touch(twin, 2)
        # ?since=0 is overridden by the header EventSource sends when it reconnects
        with connect_sse(http, "GET", "/subscribe?since=0",
                         headers={"Last-Event-ID": seen[-1].id}) as source:
            resumed = []
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                resumed.append(sse)
                if len(resumed) == 2:
                    break
    assert [json.loads(s.data)["id"] for s in resumed] == later
    assert resumed[0].event == "twin.updated"


def test_subscribe_filters_like_diff_by_type_and_twin(aiw_server, twin, agent_token):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    assign_perm("twins.view_twin", AgentToken.objects.get().user, other)
    touch(other)
    mine = touch(twin, 2)
    touch(other)
    query = urlencode({"since": "0", "twin": "plant", "types": "twin"})
    stream = raw.open_stream(aiw_server, f"/subscribe?{query}", bearer(agent_token))
    frames = raw.read_frames(stream, 2, events_only=True)
    stream.close()
    status, _, body = raw.get(aiw_server, f"/diff?{query}", bearer(agent_token))
    assert [e["id"] for e in _events(frames)] == mine
    assert [e["id"] for e in json.loads(body)["events"]] == mine and status == 200


def test_subscribe_hides_twins_outside_the_tokens_scope(fresh_server, twin, users, make_token):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    assign_perm("twins.view_twin", users["outsider"], other)
    token = make_token(user=users["outsider"])
    touch(twin)
    (visible,) = touch(other)
    stream = raw.open_stream(fresh_server, "/subscribe?since=0", bearer(token))
    (frame,) = raw.read_frames(stream, 1, events_only=True)
    stream.close()
    assert json.loads(frame["data"])["id"] == visible


@pytest.mark.parametrize(("cursor", "reason"), [("garbage!", "unknown"),
                                                 (encode_cursor(10**12), "unknown")])
def test_an_unknown_cursor_is_a_410_problem_before_any_stream(
    aiw_server, twin, agent_token, cursor, reason
):
    status, headers, body = raw.get(aiw_server, f"/subscribe?since={cursor}",
                                    bearer(agent_token))
    assert status == 410 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["reason"] == reason
    assert json.loads(body)["resync"].endswith("/snapshot")


def test_revoked_expired_and_missing_credentials_are_401_problems(aiw_server, users, make_token):
    revoked = make_token("viewer")
    services.revoke_token(AgentToken.objects.get().pk)
    expired = make_token("agent", expires_at=timezone.now())
    for headers in [bearer(revoked), bearer(expired), bearer("aiw_nothing"), {}]:
        status, response_headers, body = raw.get(aiw_server, "/subscribe", headers)
        assert status == 401, headers
        assert response_headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["status"] == 401


def test_a_caller_may_hold_only_a_few_streams_at_once(aiw_server, twin, agent_token):
    streams = [raw.open_stream(aiw_server, "/subscribe", bearer(agent_token)) for _ in range(4)]
    status, headers, body = raw.get(aiw_server, "/subscribe", bearer(agent_token))
    for stream in streams:
        stream.close()
    assert [s.status for s in streams] == [200] * 4
    assert status == 429 and "retry-after" in headers
    assert json.loads(body)["title"] == "Too many streams"


def test_a_token_revoked_mid_stream_ends_it_with_an_error_event(aiw_server, twin, agent_token):
    stream = raw.open_stream(aiw_server, "/subscribe", bearer(agent_token))
    raw.read_frames(stream, 1)  # the stream is open
    services.revoke_token(AgentToken.objects.get().pk)
    final = raw.read_frames(stream, 1)[0]
    while final.get("event") != "aiw.error":  # heartbeats until the next scope check
        final = raw.read_frames(stream, 1)[0]
    message = json.loads(final["data"])
    assert message["problem"]["status"] == 401
    assert errors("stream-control.v1", message) == []
    stream.close()


def test_a_slow_client_is_told_to_resume_from_its_cursor_and_loses_nothing(
    aiw_server, twin, agent_token
):
    """GIVEN a client that stops reading, WHEN far more events arrive than fit in its socket
    and its bounded queue, THEN the server ends the stream with ``aiw.reconnect`` carrying the
    cursor of the last event it sent, and resuming /diff from there yields the rest: every
    event exactly once."""
    start = encode_cursor(touch(twin)[0])
    sock = raw.stalled_socket(aiw_server, f"/subscribe?since={start}",
                              bearer(agent_token) | {"Connection": "close"})
    head = raw.read_until(sock, b": keep-alive")  # heartbeats come only once live
    with transaction.atomic():  # one commit: the burst arrives at once
        produced = touch(twin, 300, pad=16_000)
    time.sleep(3)  # let the server fill the socket, then the queue, then give up
    frames = raw.parse_sse(raw.dechunk(head + raw.read_until_closed(sock)))
    sent = [f["json"]["id"] for f in frames if f["event"] == "twin.updated"]
    final = frames[-1]
    assert final["event"] == "aiw.reconnect" and final["json"]["reason"] == "slow_consumer"
    assert errors("stream-control.v1", final["json"]) == []
    assert 0 < len(sent) < len(produced)
    assert final["json"]["cursor"] == final["id"] == encode_cursor(sent[-1])
    rest = []
    cursor = final["json"]["cursor"]
    while True:
        _, _, body = raw.get(aiw_server, f"/diff?since={cursor}&limit=1000",
                             bearer(agent_token))
        page = json.loads(body)
        rest += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sent + rest == produced
