"""Prometheus metrics: ``GET /metrics`` in the text exposition format (prometheus-client).

Two kinds of series:

- **Per process**, updated as things happen: HTTP requests by method, route (the URL pattern,
  never the raw path, so the label set stays small) and status, and their latencies
  (``RequestMetricsMiddleware``). With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client
  keeps them in files in that folder and ``/metrics`` adds up every process's (several web
  workers behind one port); the folder must be emptied before the server starts.
- **Computed at scrape time** from the shared state (``OpsTwinCollector``): ingest counters,
  buffer and lags from the subscribers' status files, dead letters, anomalies opened, proposals
  and simulation runs by state from PostgreSQL, Celery queue depth from the broker, and this
  process's change-feed streams and their lag. A source that cannot be read yields
  ``opstwin_metrics_source_up{source=...} 0`` instead of failing the scrape.

``METRICS_TOKEN`` set: the endpoint requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable, Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "opstwin_http_requests", "HTTP responses by method, route pattern and status code.",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "opstwin_http_request_duration_seconds",
    "Time from request to response headers (seconds), by method and route pattern.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
UNMATCHED_ROUTE = "<unmatched>"


def route_of(request: HttpRequest) -> str:
    """The URL pattern that served ``request`` (e.g. ``telemetry/query``), or ``<unmatched>``."""
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else UNMATCHED_ROUTE


def observe_request(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one response and its latency (seconds)."""
    route = route_of(request)
    HTTP_REQUESTS.labels(request.method or "", route, str(status)).inc()
    HTTP_LATENCY.labels(request.method or "", route).observe(seconds)


class RequestMetricsMiddleware:
    """Counts and times every response; sync or async, as the rest of the stack runs.

    The latency ends when the response object is returned (for SSE streams: when the stream
    starts), which is what a client waits for before the first byte.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        start = time.perf_counter()
        response = self.get_response(request)
        observe_request(request, response.status_code, time.perf_counter() - start)
        return response

    async def _acall(self, request: HttpRequest):
        start = time.perf_counter()
        response = await self.get_response(request)
        observe_request(request, response.status_code, time.perf_counter() - start)
        return response


# --- scrape-time series -------------------------------------------------------------------------
def ingest_metrics() -> list[Metric]:
    """Series from the ingest subscribers' status files (``INGEST_STATUS_DIR``)."""
    from telemetry.ingest_status import LagHistogram, read_statuses

    counters = {
        "received": "MQTT messages received", "committed": "messages committed (and acked)",
        "accepted": "events accepted", "duplicates": "duplicate events dropped",
        "rejected": "events rejected to the dead-letter table",
    }
    families = {key: CounterMetricFamily(f"opstwin_ingest_{key}", f"Ingest: {text}.",
                                         labels=["subscriber"])
                for key, text in counters.items()}
    up = GaugeMetricFamily("opstwin_ingest_up", "1: status fresh and connected to the broker.",
                           labels=["subscriber"])
    buffered = GaugeMetricFamily("opstwin_ingest_buffered",
                                 "Messages received but not yet committed.", labels=["subscriber"])
    commit_lag = GaugeMetricFamily("opstwin_ingest_commit_lag_seconds",
                                   "Last batch: commit time minus receive time (seconds).",
                                   labels=["subscriber"])
    event_lag = GaugeMetricFamily("opstwin_ingest_event_lag_seconds",
                                  "Commit time minus event time since start, by quantile (s).",
                                  labels=["subscriber", "quantile"])
    for status in read_statuses(settings.INGEST_STATUS_DIR):
        name = str(status.get("client_id") or status.get("pid") or "unknown")
        for key, family in families.items():
            family.add_metric([name], float(status.get(key, 0)))
        up.add_metric([name], float(not status["stale"] and bool(status.get("connected"))))
        buffered.add_metric([name], float(status.get("buffered", 0)))
        commit_lag.add_metric([name], float(status.get("last_commit_lag_s", 0.0)))
        lags = LagHistogram.from_dict(status.get("event_lag", {}))
        for quantile in (0.5, 0.99):
            if (value := lags.quantile(quantile)) is not None:
                event_lag.add_metric([name, str(quantile)], value)
    return [*families.values(), up, buffered, commit_lag, event_lag]


def database_metrics() -> list[Metric]:
    """Series counted in PostgreSQL: dead letters, anomalies, proposals, simulation runs."""
    from django.db.models import Count

    from policy.models import Proposal
    from simulation.models import SimulationRun
    from telemetry.models import Anomaly, DeadLetter

    dead = GaugeMetricFamily("opstwin_dead_letters", "Payloads kept in the dead-letter table.")
    dead.add_metric([], float(DeadLetter.objects.count()))
    opened = CounterMetricFamily("opstwin_anomalies_opened", "Anomaly episodes opened.",
                                 labels=["severity"])
    open_now = GaugeMetricFamily("opstwin_anomalies", "Anomaly episodes by status and severity.",
                                 labels=["status", "severity"])
    by_severity: dict[str, int] = {}
    for row in Anomaly.objects.values("status", "severity").annotate(n=Count("id")):
        open_now.add_metric([row["status"], row["severity"]], float(row["n"]))
        by_severity[row["severity"]] = by_severity.get(row["severity"], 0) + row["n"]
    for severity, n in sorted(by_severity.items()):
        opened.add_metric([severity], float(n))
    proposals = GaugeMetricFamily("opstwin_proposals", "Proposals by status.", labels=["status"])
    for row in Proposal.objects.values("status").annotate(n=Count("id")).order_by("status"):
        proposals.add_metric([row["status"]], float(row["n"]))
    return [dead, opened, open_now, proposals, *simulation_metrics(SimulationRun)]


def simulation_metrics(run_model) -> list[Metric]:
    """Simulation runs by status, and the summed duration (s) of the finished ones."""
    from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum

    runs = GaugeMetricFamily("opstwin_simulation_runs", "Simulation runs by status.",
                             labels=["status"])
    for row in run_model.objects.values("status").annotate(n=Count("id")).order_by("status"):
        runs.add_metric([row["status"]], float(row["n"]))
    finished = run_model.objects.filter(started_at__isnull=False, finished_at__isnull=False)
    totals = finished.aggregate(n=Count("id"), total=Sum(ExpressionWrapper(
        F("finished_at") - F("started_at"), output_field=DurationField())))
    duration = CounterMetricFamily("opstwin_simulation_duration_seconds",
                                   "Wall time of finished simulation runs, summed (seconds).")
    duration.add_metric([], totals["total"].total_seconds() if totals["total"] else 0.0)
    count = CounterMetricFamily("opstwin_simulation_finished",
                                "Finished simulation runs (divide the duration by this).")
    count.add_metric([], float(totals["n"]))
    return [runs, duration, count]


def celery_queue_names() -> list[str]:
    """The queues tasks are routed to (``CELERY_TASK_ROUTES``) plus the default queue."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_metrics() -> list[Metric]:
    """Messages waiting in each Celery queue (kombu's passive queue_declare on the broker)."""
    from opstwin_site.celery import app

    depth = GaugeMetricFamily("opstwin_celery_queue_depth", "Messages waiting per Celery queue.",
                              labels=["queue"])
    timeout = settings.READY_TIMEOUT_SECONDS
    # One bounded attempt: kombu would otherwise keep reconnecting to a broker that is down.
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "max_retries": 1,
               "connect_retries_timeout": timeout}
    with app.connection_for_read(transport_options=options) as connection:
        channel = connection.default_channel
        for queue in celery_queue_names():
            try:
                waiting = channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:  # never declared: nothing waits
                waiting = 0
            depth.add_metric([queue], float(waiting))
    return [depth]


class OpsTwinCollector:
    """Yields the scrape-time series; ``streams`` is this process's (count, feed lag) or None."""

    def __init__(self, streams: tuple[int, int] | None = None) -> None:
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        sources: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("ingest_status", ingest_metrics), ("database", database_metrics)]
        if not settings.CELERY_TASK_ALWAYS_EAGER and settings.REDIS_URL:
            sources.append(("celery_broker", queue_metrics))
        up = GaugeMetricFamily("opstwin_metrics_source_up",
                               "1 when the source could be read for this scrape.",
                               labels=["source"])
        for source, read in sources:
            try:
                metrics = list(read())
            except Exception as exc:  # a scrape must still answer; the gauge says what failed
                log.warning("metrics source %s failed: %r", source, exc)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from metrics
        yield up
        if self.streams is not None:
            subscribers, lag = self.streams
            yield GaugeMetricFamily("opstwin_feed_streams",
                                    "Change-feed streams (SSE/WebSocket) open in this process.",
                                    value=float(subscribers))
            yield GaugeMetricFamily("opstwin_feed_lag_events",
                                    "Feed events written but not yet read by this process's hub.",
                                    value=float(lag))


def exposition(streams: tuple[int, int] | None) -> bytes:
    """The whole text exposition: per-process series (all processes in multiprocess mode), then
    the scrape-time ones."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        process_registry = CollectorRegistry()
        MultiProcessCollector(process_registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        process_registry = REGISTRY
    scrape_registry = CollectorRegistry(auto_describe=False)
    scrape_registry.register(OpsTwinCollector(streams))
    return generate_latest(process_registry) + generate_latest(scrape_registry)


async def _stream_state() -> tuple[int, int]:
    """(streams open, feed events not yet read) of this event loop's feed hub."""
    from aiw.feed import newest_event_id
    from aiw.hub import get_hub

    hub = get_hub()
    if not hub.subscribers:
        return 0, 0
    newest = await sync_to_async(newest_event_id)()
    return len(hub.subscribers), max(0, newest - hub.last_id)


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: 200 with the exposition; 401 without the bearer token when one is set."""
    if not _authorized(request):
        response = HttpResponse("metrics need a bearer token\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        streams = await _stream_state()
    except Exception as exc:  # the feed table unreachable: still expose everything else
        log.warning("metrics: feed hub state failed: %r", exc)
        streams = None
    body = await sync_to_async(exposition)(streams)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
