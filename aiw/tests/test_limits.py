"""Per-token rate limits (429 + Retry-After, problem+json) on the API and on streams."""

from __future__ import annotations

import asyncio
import contextvars
import json

import pytest

from aiw.db import run_db
from aiw.models import AgentToken
from aiw.tests import raw
from aiw.tests.conftest import bearer
from aiw.throttling import AgentTokenThrottle, parse_rate, retry_after

pytestmark = pytest.mark.django_db


def test_a_token_over_its_rate_gets_a_429_problem_with_retry_after(client, make_token):
    token = make_token("agent", rate="3/min")
    statuses = [client.get("/diff", headers=bearer(token)).status_code for _ in range(4)]
    refused = client.get("/diff", headers=bearer(token))
    assert statuses == [200, 200, 200, 429]
    assert refused["Content-Type"] == "application/problem+json"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["status"] == 429


def test_each_token_has_its_own_budget(client, make_token, users):
    spent = make_token("agent", rate="1/min")
    fresh = make_token(user=users["viewer"], rate="1/min")
    client.get("/diff", headers=bearer(spent))
    assert client.get("/diff", headers=bearer(spent)).status_code == 429
    assert client.get("/diff", headers=bearer(fresh)).status_code == 200


def test_sessions_are_not_limited_by_token_rates(viewer_client, settings):
    settings.AIW_TOKEN_RATE = "1/min"
    assert [viewer_client.get("/diff").status_code for _ in range(3)] == [200, 200, 200]


def test_a_window_resets_when_its_period_ends(make_token):
    make_token("agent", rate="2/min")
    row, throttle = AgentToken.objects.get(), AgentTokenThrottle()
    assert [throttle.allow_token(row, now=1_000_040.0) for _ in range(3)] == [True, True, False]
    assert throttle.wait() == pytest.approx(40.0)
    assert throttle.allow_token(row, now=1_000_080.0) is True


@pytest.mark.django_db(transaction=True)
def test_streams_in_their_own_tasks_count_on_one_shared_cache_client(make_token):
    """GIVEN streams that each run in their own asyncio task (their own context, as under
    ASGI), WHEN each counts its connection, THEN they all use the process's one counter cache
    (``caches["aiw"]`` would hand each context its own Redis connection pool) and each is
    counted."""
    make_token("agent", rate="3/min")
    row = AgentToken.objects.get()

    def count() -> tuple[object, float | None]:
        return AgentTokenThrottle().cache, retry_after(row)

    async def streams() -> list[tuple[object, float | None]]:
        return await asyncio.gather(*(asyncio.create_task(run_db(count)) for _ in range(4)))

    # A fresh context, like the web server's: this test's own already holds caches["aiw"].
    results = contextvars.Context().run(asyncio.run, streams())
    assert all(cache is results[0][0] for cache, _ in results)
    assert sorted(wait is None for _, wait in results) == [False, True, True, True]


def test_rates_parse_like_drf_rates():
    assert parse_rate("120/min") == (120, 60) and parse_rate("5/s") == (5, 1)
    with pytest.raises(ValueError):
        parse_rate("fast")


@pytest.mark.django_db(transaction=True)
def test_opening_a_stream_counts_against_the_token_rate(aiw_server, make_token, twin):
    token = make_token("agent", rate="1/min")
    stream = raw.open_stream(aiw_server, "/subscribe", bearer(token))
    status, headers, body = raw.get(aiw_server, "/subscribe", bearer(token))
    stream.close()
    assert stream.status == 200
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["title"] == "Request was throttled."
