"""/health and /ready against the real PostgreSQL, Redis and Mosquitto, the container probe
commands, and the production server command of the Docker image (no ``Server`` banner)."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from opstwin_site import health
from telemetry.ingest_status import write_status
from twins.env import database_url_of

REPO = Path(__file__).resolve().parent.parent
NOTHING_LISTENS = 18169  # in this suite's port range, never bound


@pytest.fixture
def status_dir(settings, tmp_path) -> Path:
    settings.INGEST_STATUS_DIR = tmp_path / "ingest"
    settings.READY_INGEST_MIN_SUBSCRIBERS = 0
    settings.READY_TIMEOUT_SECONDS = 2.0
    return settings.INGEST_STATUS_DIR


@pytest.fixture
def services(settings, redis_url, mqtt_url, status_dir) -> None:
    settings.REDIS_URL = redis_url


def subscriber_status(name: str, **changes) -> dict:
    """A status file body as ``ingest_mqtt`` writes it (telemetry/subscriber.py)."""
    return {"client_id": name, "pid": 1, "connected": True, "last_commit_lag_s": 0.2,
            "db_down_since": None, "buffered": 0, "updated_at": time.time(),
            "received": 10, "committed": 10, "accepted": 10, "duplicates": 0, "rejected": 0,
            "event_lag": {}, "commit_lag": {}} | changes


def test_health_answers_without_touching_the_database(client):
    """No django_db mark: any query in the request would raise instead of answering."""
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_ready_when_every_dependency_answers(client, services):
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations", "redis", "mqtt", "ingest"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "skipped" not in body["checks"]["redis"] and "skipped" not in body["checks"]["mqtt"]


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize("missing", ["redis", "mqtt", "database"])
def test_ready_names_the_dependency_that_is_down(client, services, settings, missing):
    """GIVEN one dependency pointed at a port nothing listens on
    WHEN /ready is asked
    THEN 503, that check failed with its reason, and the others still pass."""
    if missing == "redis":
        settings.REDIS_URL = f"redis://127.0.0.1:{NOTHING_LISTENS}/0"
    elif missing == "mqtt":
        settings.MQTT_URL = f"mqtt://127.0.0.1:{NOTHING_LISTENS}"
    else:
        settings.DATABASES = {"default": {**settings.DATABASES["default"],
                                          "HOST": "127.0.0.1", "PORT": str(NOTHING_LISTENS)}}
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "not_ready"
    failed = {name for name, check in body["checks"].items() if not check["ok"]}
    expected = {"database", "migrations"} if missing == "database" else {missing}
    assert failed == expected
    assert "refused" in body["checks"][missing]["error"].lower()


@pytest.mark.django_db(transaction=True)
def test_ready_lists_unapplied_migrations(client, services):
    """GIVEN the record of one app's latest migration removed from django_migrations
    THEN /ready is 503 and names that migration; restored, it is ready again."""
    app, name = sorted(health._latest_migrations())[0]
    with connection.cursor() as cursor:
        cursor.execute("SELECT applied FROM django_migrations WHERE app = %s AND name = %s",
                       [app, name])
        (applied,) = cursor.fetchone()
        cursor.execute("DELETE FROM django_migrations WHERE app = %s AND name = %s", [app, name])
    try:
        response = client.get("/ready")
        assert response.status_code == 503
        assert f"{app}.{name}" in response.json()["checks"]["migrations"]["error"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO django_migrations (app, name, applied) "
                           "VALUES (%s, %s, %s)", [app, name, applied])
    assert client.get("/ready").status_code == 200


@pytest.mark.django_db
def test_ready_bounds_the_ingest_subscribers_lag(client, services, settings, status_dir):
    """Fresh subscribers count; a stale file does not; one whose PostgreSQL has been down for
    two minutes lags past the 30 s bound; a disconnected one is not ready either."""
    settings.READY_INGEST_MIN_SUBSCRIBERS = 1
    settings.READY_INGEST_MAX_LAG_SECONDS = 30.0
    write_status(status_dir / "old.json", subscriber_status("old", updated_at=time.time() - 60))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["ingest"]["problems"] == [
        "0 healthy ingest subscribers, 1 required"]

    write_status(status_dir / "a.json", subscriber_status("a"))
    response = client.get("/ready")
    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()["checks"]["ingest"]["subscribers"]}
    assert rows["old"]["stale"] is True and rows["a"]["stale"] is False

    write_status(status_dir / "b.json",
                 subscriber_status("b", db_down_since=time.time() - 120))
    write_status(status_dir / "c.json", subscriber_status("c", connected=False))
    problems = client.get("/ready").json()["checks"]["ingest"]["problems"]
    assert len(problems) == 2
    assert problems[0].startswith("b lags 12") and problems[0].endswith("(bound 30.0 s)")
    assert problems[1] == "c is not connected to the broker"


def test_subscriber_lag_is_the_larger_of_commit_lag_and_database_outage():
    now = 1000.0
    assert health.subscriber_lag({"last_commit_lag_s": 2.5, "db_down_since": None}, now) == 2.5
    assert health.subscriber_lag({"last_commit_lag_s": 2.5, "db_down_since": 990.0}, now) == 10.0


# --- the probe commands of docker/compose.yaml ------------------------------------------------
def _probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opstwin_site.health", *args],
                          env=os.environ | (env or {}), cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_the_ingest_probe_reads_its_own_status_file(tmp_path, settings):
    write_status(tmp_path / "opstwin-ingest-1.json", subscriber_status("opstwin-ingest-1"))
    write_status(tmp_path / "opstwin-ingest-2.json",
                 subscriber_status("opstwin-ingest-2", connected=False))
    env = {"INGEST_STATUS_DIR": str(tmp_path),  # and never an embedded server of its own:
           "DATABASE_URL": database_url_of(settings.DATABASES["default"])}
    assert _probe("ingest", "opstwin-ingest-1", env=env).returncode == 0
    result = _probe("ingest", "opstwin-ingest-2", env=env)
    assert result.returncode == 1
    assert "not connected" in result.stdout
    assert _probe("ingest", "opstwin-ingest-3", env=env).returncode == 1


def test_the_beat_probe_wants_a_recently_saved_schedule(tmp_path):
    schedule = tmp_path / "schedule"
    (tmp_path / "schedule.db").write_text("x")
    assert _probe("beat", str(schedule)).returncode == 0
    old = time.time() - 3600
    os.utime(tmp_path / "schedule.db", (old, old))
    assert _probe("beat", str(schedule)).returncode == 1


# --- the image's server command ---------------------------------------------------------------
def dockerfile_command() -> list[str]:
    """The CMD of docker/Dockerfile as an argument list."""
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^CMD (\[.*\])\s*$", text, re.M)
    assert match
    return __import__("json").loads(match.group(1))


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.django_db(transaction=True)
def test_the_image_command_serves_probes_without_a_server_banner(tmp_path, redis_url, mqtt_url):
    """GIVEN uvicorn started with the Dockerfile's CMD (bound to loopback) and production settings
    THEN /health and /ready answer 200 over plain HTTP (exempt from the HTTPS redirect), with a
    CSP and no ``Server`` header; other pages redirect to HTTPS;
    and the compose health-check command for the web passes."""
    port = 18163
    command = dockerfile_command()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    env = os.environ | {
        "OPSTWIN_PRODUCTION": "1", "SECRET_KEY": "s" * 20 + "-production-test-key-0123456789abc",
        "AUDIT_HMAC_KEY": "a" * 40, "ALLOWED_HOSTS": "127.0.0.1", "DEBUG": "0",
        "DATABASE_URL": database_url_of(connection.settings_dict), "REDIS_URL": redis_url,
        "MQTT_URL": mqtt_url, "OPSTWIN_DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX_SIZE": "2",
    }
    log = (tmp_path / "web.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", *command], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()[-3000:]
            try:
                status, headers, body = _get(port, "/health")
                break
            except OSError:
                assert time.monotonic() < deadline, shlex.join(command)
                time.sleep(0.2)
        assert status == 200 and body == b'{"status": "ok"}'
        assert "server" not in headers
        assert "default-src 'self'" in headers["content-security-policy"]
        status, headers, _ = _get(port, "/ready")
        assert status == 200
        status, headers, _ = _get(port, "/twins/")
        assert status == 301 and headers["location"].startswith("https://")
        result = _probe("http", f"http://127.0.0.1:{port}/ready")
        assert result.returncode == 0, result.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)
