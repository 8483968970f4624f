"""One web process keeps its PostgreSQL connections within its pool, however many clients."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from django.db import connection

from aiw.tests.conftest import bearer, live_server_process
from policy.tests.factories import proposal
from twins.models import Asset

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS, REQUESTS, POOL = 50, 50, 4


def _connections_of(application_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                       [application_name])
        return cursor.fetchone()[0]


def _hammer(url: str, token: str, statuses: list[int]) -> None:
    with httpx.Client(timeout=60, headers=bearer(token)) as client:
        for _ in range(REQUESTS):
            statuses.append(client.get(url).status_code)


def test_fifty_clients_stay_within_the_pool_with_no_5xx(twin, make_token, tmp_path):
    """GIVEN one web process whose pool holds at most 4 connections
    WHEN 50 clients send 50 requests each for a proposal, all at once
    THEN every response is 200 and the process never holds more than 4 connections."""
    asset = Asset.objects.create(twin=twin, slug="pump-1", name="Pump 1", kind="pump")
    target = proposal(asset)
    token = make_token("agent", ["read"], rate="100000/min")
    name = f"opstwin-load-{uuid.uuid4().hex[:8]}"
    env = {"DB_POOL_MAX_SIZE": str(POOL), "DB_APPLICATION_NAME": name}
    with live_server_process(tmp_path / "server.log", env) as base:
        statuses: list[int] = []
        workers = [threading.Thread(target=_hammer, args=(f"{base}/proposals/{target.pk}",
                                                           token, statuses))
                   for _ in range(CLIENTS)]
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.02):
                peak = max(peak, _connections_of(name))
            connection.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        sampler.join()
    print(f"peak connections {peak} (pool {POOL}), {len(statuses)} responses")
    assert len(statuses) == CLIENTS * REQUESTS
    assert {s for s in statuses if s != 200} == set()
    assert 1 <= peak <= POOL
