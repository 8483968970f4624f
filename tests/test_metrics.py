"""GET /metrics: request series from the middleware, scrape-time series from PostgreSQL, the
ingest status files, the Celery broker (real Redis) and the feed hub; multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone
from kombu import Queue
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from opstwin_site.celery import app as celery_app
from opstwin_site.metrics import metrics_view
from policy.choices import ProposalStatus
from policy.tests import factories
from telemetry.ingest_status import LagHistogram, write_status
from telemetry.models import Anomaly, DeadLetter
from twins.env import database_url_of

REPO = Path(__file__).resolve().parent.parent


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one /metrics response (parsed strictly)."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_served(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "opstwin_http_requests_total", {"method": "GET", "route": route, "status": status})
    return value or 0.0


def test_requests_are_counted_by_route_pattern_and_status(client):
    before = requests_served("health", "200"), requests_served("<unmatched>", "404")
    client.get("/health")
    client.get("/health")
    client.get(f"/no-such-page-{uuid.uuid4().hex}")
    assert requests_served("health", "200") == before[0] + 2
    assert requests_served("<unmatched>", "404") == before[1] + 1
    count = REGISTRY.get_sample_value("opstwin_http_request_duration_seconds_count",
                                      {"method": "GET", "route": "health"})
    assert count >= 2


@pytest.mark.django_db
def test_database_series_count_dead_letters_anomalies_proposals_and_runs(client, pump):
    DeadLetter.objects.create(source="mqtt", topic="t", payload="{", reason="not JSON")
    now = timezone.now()
    for severity, status in [("high", "open"), ("high", "closed"), ("critical", "open")]:
        Anomaly.objects.create(asset=pump, metric="Pressure", detector="zscore", kind="spike",
                               severity=severity, score=0.9, status=status, started_at=now,
                               last_seen_at=now)
    factories.proposal(pump, status=ProposalStatus.PENDING_APPROVAL)
    factories.proposal(pump, status=ProposalStatus.REJECTED)
    run = factories.simulation(pump)
    run.started_at, run.finished_at = now, now + timedelta(seconds=2.5)
    run.save(update_fields=["started_at", "finished_at"])

    samples = scrape(client)
    assert samples[("opstwin_metrics_source_up", (("source", "database"),))] == 1.0
    assert samples[("opstwin_dead_letters", ())] == 1.0
    assert samples[("opstwin_anomalies_opened_total", (("severity", "high"),))] == 2.0
    assert samples[("opstwin_anomalies_opened_total", (("severity", "critical"),))] == 1.0
    assert samples[("opstwin_anomalies", (("severity", "high"), ("status", "open")))] == 1.0
    assert samples[("opstwin_proposals", (("status", "pending_approval"),))] == 1.0
    assert samples[("opstwin_proposals", (("status", "rejected"),))] == 1.0
    # the two proposals' own simulation runs are unfinished; the third run took 2.5 s
    assert samples[("opstwin_simulation_duration_seconds_total", ())] == 2.5
    assert samples[("opstwin_simulation_finished_total", ())] == 1.0


@pytest.mark.django_db
def test_ingest_series_come_from_the_status_files(client, settings, tmp_path):
    settings.INGEST_STATUS_DIR = tmp_path
    lags = LagHistogram()
    for seconds in (0.1, 0.2, 0.3):
        lags.add(seconds)
    write_status(tmp_path / "ingest-a.json", {
        "client_id": "ingest-a", "received": 120, "committed": 118, "accepted": 110,
        "duplicates": 5, "rejected": 3, "connected": True, "buffered": 2,
        "last_commit_lag_s": 0.04, "event_lag": lags.to_dict(), "updated_at": time.time()})
    write_status(tmp_path / "ingest-b.json", {
        "client_id": "ingest-b", "accepted": 7, "connected": True,
        "updated_at": time.time() - 3600})

    samples = scrape(client)
    a, b = (("subscriber", "ingest-a"),), (("subscriber", "ingest-b"),)
    assert samples[("opstwin_ingest_accepted_total", a)] == 110.0
    assert samples[("opstwin_ingest_rejected_total", a)] == 3.0
    assert samples[("opstwin_ingest_buffered", a)] == 2.0
    assert samples[("opstwin_ingest_up", a)] == 1.0
    assert samples[("opstwin_ingest_up", b)] == 0.0  # stale: not updated for an hour
    p99 = samples[("opstwin_ingest_event_lag_seconds", (("quantile", "0.99"),
                                                         ("subscriber", "ingest-a")))]
    assert 0.28 <= p99 <= 0.3


@pytest.mark.django_db
def test_celery_queue_depth_is_read_from_the_broker(client, settings, redis_url):
    """GIVEN three messages waiting in a routed queue of the real Redis broker
    THEN /metrics reports a depth of 3 for it, and 0 for a routed queue never declared."""
    busy, idle = f"metrics-test-{uuid.uuid4().hex[:8]}", f"metrics-idle-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_ALWAYS_EAGER, settings.REDIS_URL = False, redis_url
    settings.CELERY_TASK_ROUTES = {"x.*": {"queue": busy}, "y.*": {"queue": idle}}
    queue = Queue(busy)
    with celery_app.connection_for_write() as conn:
        producer = conn.Producer()
        for n in range(3):
            producer.publish({"n": n}, routing_key=busy, declare=[queue])
    try:
        samples = scrape(client)
        assert samples[("opstwin_metrics_source_up", (("source", "celery_broker"),))] == 1.0
        assert samples[("opstwin_celery_queue_depth", (("queue", busy),))] == 3.0
        assert samples[("opstwin_celery_queue_depth", (("queue", idle),))] == 0.0
    finally:
        with celery_app.connection_for_write() as conn:
            queue(conn.default_channel).delete()


@pytest.mark.django_db
def test_an_unreachable_source_is_reported_not_fatal(client, settings):
    settings.CELERY_TASK_ALWAYS_EAGER, settings.REDIS_URL = False, "redis://127.0.0.1:18169/0"
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = settings.REDIS_URL
    try:
        samples = scrape(client)
    finally:
        celery_app.conf.broker_url = previous
    assert samples[("opstwin_metrics_source_up", (("source", "celery_broker"),))] == 0.0
    assert samples[("opstwin_metrics_source_up", (("source", "database"),))] == 1.0


@pytest.mark.django_db
def test_a_metrics_token_is_required_when_set(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, HTTP_AUTHORIZATION="Bearer scrape-secret")


def close_connection() -> None:
    connection.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_open_feed_streams_are_counted():
    from aiw.hub import Subscriber, get_hub
    from twins.feed_scope import FeedFilter, Scope

    hub = get_hub()
    subscriber = Subscriber(Scope(all_twins=True), FeedFilter(), limit=10, key="metrics-test")
    hub.register(subscriber)
    try:
        response = await metrics_view(RequestFactory().get("/metrics"))
    finally:
        await hub.unsubscribe(subscriber)
        await sync_to_async(close_connection)()  # the executor thread's connection
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert families["opstwin_feed_streams"].samples[0].value == 1.0
    assert families["opstwin_feed_lag_events"].samples[0].value >= 0.0


_TWO_PROCESSES = """
import os
import django
django.setup()
from django.test import Client
for _ in range(2):  # two worker processes, as under a multi-worker server
    pid = os.fork()
    if pid == 0:
        client = Client()
        codes = [client.get("/health").status_code for _ in range(2)]
        os._exit(0 if codes == [200, 200] else 1)
    assert os.waitpid(pid, 0)[1] == 0
from opstwin_site.metrics import exposition
print(exposition(None).decode())
"""


@pytest.mark.django_db(transaction=True)
def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """GIVEN PROMETHEUS_MULTIPROC_DIR shared by two processes that each served /health twice
    THEN the parent's exposition counts 4 such requests."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                        "DJANGO_SETTINGS_MODULE": "opstwin_site.settings",
                        "DATABASE_URL": database_url_of(connection.settings_dict)}
    result = subprocess.run([sys.executable, "-c", _TWO_PROCESSES], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    served = [s.value for f in text_string_to_metric_families(result.stdout) for s in f.samples
              if s.name == "opstwin_http_requests_total" and s.labels["route"] == "health"]
    assert served == [4.0]
