"""Liveness and readiness probes, and the same checks as container health-check commands.

``GET /health``: 200 ``{"status": "ok"}`` while the process answers; it touches nothing else,
so a database outage never gets a healthy web process restarted.

``GET /ready``: 200 when every check passes, else 503; either way the JSON names each check::

    {"status": "ready" | "not_ready",
     "checks": {"database":   {"ok": true, "ms": 1.9},
                "migrations": {"ok": true, "ms": 3.1, "pending": []},
                "redis":      {"ok": true, "ms": 0.4},          # or {"ok": true, "skipped": ...}
                "mqtt":       {"ok": false, "ms": 3001.2, "error": "TimeoutError: ..."},
                "ingest":     {"ok": true, "subscribers": [...], "min_subscribers": 1, ...}}}

The database is reached with its own short connection (``READY_TIMEOUT_SECONDS``) rather than
the process pool, so a dead server answers within the timeout instead of the pool's wait.
Redis (Celery broker and channel layer) and the MQTT broker are checked only when configured.
The ingest check reads the subscribers' status files (``telemetry.ingest_status``): at least
``READY_INGEST_MIN_SUBSCRIBERS`` must be fresh, and each fresh one connected and lagging at most
``READY_INGEST_MAX_LAG_SECONDS`` (the last batch's commit lag, or how long PostgreSQL has been
unreachable for it).

As a command (the compose health checks; exit 0 when healthy, 1 otherwise)::

    python -m opstwin_site.health http http://127.0.0.1:8000/ready
    python -m opstwin_site.health ingest opstwin-ingest-1     # its status file
    python -m opstwin_site.health beat /data/beat/schedule    # beat's schedule file is fresh
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

STALE_AFTER_S = 10.0  # ingest processes rewrite their status file about once a second


def _timed(check: Callable[[], dict]) -> dict:
    """Run ``check``; return its result with ``ok`` and ``ms``, or the error it raised."""
    start = time.perf_counter()
    try:
        result = {"ok": True, **check()}
    except Exception as exc:  # any failure of a dependency is a "not ready", with its reason
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return result


def check_database() -> dict:
    """``SELECT 1`` over a fresh connection with a connect timeout."""
    import psycopg

    from twins.env import database_url_of

    timeout = max(1, round(settings.READY_TIMEOUT_SECONDS))
    url = database_url_of(settings.DATABASES["default"])
    with psycopg.connect(url, connect_timeout=timeout, application_name="opstwin-ready") as conn:
        conn.execute("SELECT 1")
    return {}


@functools.cache
def _latest_migrations() -> frozenset[tuple[str, str]]:
    """The leaf migration of every app, read once from disk."""
    from django.db.migrations.loader import MigrationLoader

    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes())


def check_migrations() -> dict:
    """Every app's latest migration is recorded in ``django_migrations``."""
    import psycopg

    from twins.env import database_url_of

    timeout = max(1, round(settings.READY_TIMEOUT_SECONDS))
    url = database_url_of(settings.DATABASES["default"])
    with psycopg.connect(url, connect_timeout=timeout, application_name="opstwin-ready") as conn:
        applied = set(conn.execute("SELECT app, name FROM django_migrations").fetchall())
    pending = sorted(f"{app}.{name}" for app, name in _latest_migrations() - applied)
    if pending:
        raise RuntimeError(f"unapplied migrations: {', '.join(pending)}")
    return {"pending": pending}


def check_redis() -> dict:
    """PING the Redis of ``REDIS_URL`` (Celery broker, channel layer, rate limits)."""
    if not settings.REDIS_URL:
        return {"skipped": "REDIS_URL is not set"}
    import redis

    timeout = settings.READY_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout,
                                  socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return {}


def check_mqtt() -> dict:
    """Connect to the broker of ``MQTT_URL`` with this process's credentials; wait for CONNACK."""
    if not settings.MQTT_URL:
        return {"skipped": "MQTT_URL is not set"}
    from twins.mqtt import connect_client, make_client

    outcome: dict = {}
    client = make_client(settings.MQTT_URL)
    client.connect_timeout = settings.READY_TIMEOUT_SECONDS
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.setdefault("reason", reason)
    connect_client(client, settings.MQTT_URL)
    deadline = time.monotonic() + settings.READY_TIMEOUT_SECONDS
    try:
        while "reason" not in outcome and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    finally:
        client.disconnect()
    if "reason" not in outcome:
        raise TimeoutError("no CONNACK from the broker")
    if outcome["reason"].is_failure:
        raise ConnectionError(f"broker refused the connection: {outcome['reason']}")
    return {}


def subscriber_lag(status: dict, now: float) -> float:
    """How far behind one ingest subscriber is (seconds): its last batch's commit lag, or how
    long it has been unable to reach PostgreSQL, whichever is larger."""
    down_since = status.get("db_down_since")
    down_for = now - float(down_since) if down_since else 0.0
    return max(float(status.get("last_commit_lag_s") or 0.0), down_for)


def ingest_check(statuses: list[dict], *, min_subscribers: int, max_lag_s: float) -> dict:
    """Judge the subscribers' statuses (``read_statuses`` output): ``ok``, the ``problems``
    found, and one row per subscriber (name, stale, connected, lag_s, buffered)."""
    now, rows, live_ok, problems = time.time(), [], 0, []
    for status in statuses:
        name = str(status.get("client_id") or status.get("pid"))
        lag = subscriber_lag(status, now)
        row = {"name": name, "stale": status["stale"], "connected": bool(status.get("connected")),
               "lag_s": round(lag, 3), "buffered": int(status.get("buffered", 0))}
        rows.append(row)
        if row["stale"]:
            continue
        if not row["connected"]:
            problems.append(f"{name} is not connected to the broker")
        elif lag > max_lag_s:
            problems.append(f"{name} lags {lag:.1f} s (bound {max_lag_s} s)")
        else:
            live_ok += 1
    if live_ok < min_subscribers:
        problems.append(f"{live_ok} healthy ingest subscribers, {min_subscribers} required")
    return {"ok": not problems, "problems": problems, "subscribers": rows,
            "min_subscribers": min_subscribers, "max_lag_s": max_lag_s}


def check_ingest() -> dict:
    """``ingest_check`` on ``INGEST_STATUS_DIR`` with the configured bounds."""
    from telemetry.ingest_status import read_statuses

    return ingest_check(read_statuses(Path(settings.INGEST_STATUS_DIR),
                                      stale_after_s=STALE_AFTER_S),
                        min_subscribers=settings.READY_INGEST_MIN_SUBSCRIBERS,
                        max_lag_s=settings.READY_INGEST_MAX_LAG_SECONDS)


def readiness() -> dict:
    """Every check, the slow network ones concurrently; ``status`` is ready only if all pass."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        redis_result = pool.submit(_timed, check_redis)
        mqtt_result = pool.submit(_timed, check_mqtt)
        checks = {"database": _timed(check_database)}
        checks["migrations"] = (_timed(check_migrations) if checks["database"]["ok"] else
                                {"ok": False, "error": "database unreachable"})
        checks["redis"] = redis_result.result()
        checks["mqtt"] = mqtt_result.result()
    checks["ingest"] = _timed(check_ingest)
    ready = all(check["ok"] for check in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """``GET /health``: the process is alive."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready_view(request: HttpRequest) -> JsonResponse:
    """``GET /ready``: 200 when every dependency is usable, 503 with the failing checks."""
    body = readiness()
    return JsonResponse(body, status=200 if body["status"] == "ready" else 503)


# --- command-line probes for container health checks -------------------------------------------
def probe_http(url: str, timeout: float = 8.0) -> int:
    """0 when ``url`` answers 200, else 1 (prints the body either way)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            print(response.read().decode()[:2000])
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(exc.read().decode()[:2000])
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


def probe_ingest(name: str) -> int:
    """0 when the status file of subscriber ``name`` is fresh, connected and within the bound."""
    from telemetry.ingest_status import read_statuses

    statuses = [s for s in read_statuses(Path(settings.INGEST_STATUS_DIR),
                                         stale_after_s=STALE_AFTER_S)
                if str(s.get("client_id")) == name]
    result = ingest_check(statuses, min_subscribers=1,
                          max_lag_s=settings.READY_INGEST_MAX_LAG_SECONDS)
    print(f"{name}: " + ("ok" if result["ok"] else "; ".join(result["problems"])))
    return 0 if result["ok"] else 1


def probe_beat(schedule: str, max_age_s: float = 600.0) -> int:
    """0 when a file of beat's schedule (``schedule`` or ``schedule.*``) changed lately; beat
    saves it at least every 3 minutes."""
    path = Path(schedule)
    files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    age = time.time() - newest
    print(f"{schedule}: newest write {age:.0f} s ago")
    return 0 if age <= max_age_s else 1


def main(argv: list[str]) -> int:
    """``http URL`` | ``ingest NAME`` | ``beat SCHEDULE``; returns the exit status."""
    if len(argv) != 2 or argv[0] not in {"http", "ingest", "beat"}:
        print(__doc__.split("As a command")[1], file=sys.stderr)
        return 2
    kind, target = argv
    if kind == "http":
        return probe_http(target)
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    return probe_ingest(target) if kind == "ingest" else probe_beat(target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
