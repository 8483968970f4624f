"""The Python client and ``manage.py tail`` against a live server."""

from __future__ import annotations

import itertools
from io import StringIO

import httpx
import pytest
from django.core.management import call_command

from aiw.client import AIWClient, CursorFile, CursorGone
from aiw.feed import encode_cursor
from aiw.tests.conftest import touch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client_for(aiw_server, agent_token):
    made = []

    def make() -> AIWClient:
        made.append(AIWClient(aiw_server, agent_token, timeout=10))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_the_client_discovers_endpoints_and_revalidates_the_manifest_by_etag(client_for):
    client = client_for()
    statuses = []
    client.http.event_hooks["response"].append(lambda r: statuses.append(r.status_code))
    first = client.manifest()
    assert client.manifest() is first
    assert statuses == [200, 304]
    assert client.endpoint("diff").endswith("/diff")


def test_changes_pages_through_diff_until_caught_up(client_for, twin):
    produced = touch(twin, 230)
    client = client_for()
    pages = []
    client.http.event_hooks["request"].append(lambda r: pages.append(r.url.path))
    events = list(client.changes("0", limit=100))
    assert [e["id"] for e in events] == produced
    assert pages.count("/diff") == 3


def test_an_unknown_cursor_raises_cursor_gone_with_the_problem(client_for, twin):
    touch(twin)
    with pytest.raises(CursorGone) as gone:
        client_for().diff("garbage!")
    assert gone.value.problem["resync"].endswith("/snapshot")


def test_follow_reconnects_with_last_event_id_after_a_dropped_connection(
    client_for, twin, monkeypatch
):
    """GIVEN a follower whose first connection drops after one event, THEN it reconnects
    from that event's cursor and yields the rest once each."""
    produced = touch(twin, 3)
    client = client_for()
    real, calls = client._stream, []

    def flaky(cursor, **filters):
        calls.append(cursor)
        for n, event in enumerate(real(cursor, **filters)):
            if len(calls) == 1 and n == 1:
                raise httpx.ReadError("connection reset")
            yield event

    monkeypatch.setattr(client, "_stream", flaky)
    events = list(itertools.islice(client.follow("0", retry_seconds=0), 3))
    assert [e["id"] for e in events] == produced
    assert calls == ["0", encode_cursor(produced[0])]


def test_tail_prints_events_and_resumes_from_its_cursor_file(aiw_server, agent_token, twin,
                                                            tmp_path):
    cursor_file = tmp_path / "cursor"
    first = touch(twin, 2)

    def tail() -> str:
        out = StringIO()
        call_command("tail", "--url", aiw_server, "--token", agent_token, "--cursor-file",
                     str(cursor_file), "--max-events", "2", stdout=out)
        return out.getvalue()

    printed = tail()
    second = touch(twin, 2)
    resumed = tail()
    assert [f"#{i} " in printed for i in first] == [True, True]
    assert [f"#{i} " in resumed for i in second] == [True, True]
    assert not any(f"#{i} " in resumed for i in first)
    assert CursorFile(cursor_file).load() == encode_cursor(second[-1])
