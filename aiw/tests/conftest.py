"""AIW test fixtures: a live uvicorn server on the test database, agent tokens, feed writers."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import caches
from django.db import connection, transaction
from guardian.shortcuts import assign_perm

from aiw import services
from opstwin_site import webserver
from twins.api.serializers import TwinSerializer
from twins.env import database_url_of
from twins.ledger import record_change
from twins.models import Twin

SERVER_ENV = {  # small bounds so tests reach them quickly
    "AIW_SSE_HEARTBEAT_SECONDS": "0.5", "AIW_HUB_POLL_SECONDS": "0.5",
    "AIW_STREAM_QUEUE_MAX": "40", "AIW_SCOPE_REFRESH_SECONDS": "0.5",
    "AIW_MAX_STREAMS_PER_CALLER": "4", "DB_CONN_MAX_AGE": "0", "LOG_LEVEL": "WARNING",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    """The test database this session set up, over TCP or the embedded server's socket."""
    return database_url_of(connection.settings_dict)


def _wait_until_serving(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120  # a Django process starts slowly on a busy machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the web server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/schemas")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the web server did not serve within 120 s:\n{log.read_text()[-3000:]}")


@contextmanager
def live_server_process(log: Path, extra_env: dict[str, str] | None = None,
                        port: int | None = None) -> Iterator[str]:
    """Serve the test database from a separate web server process; yields its base URL.

    ``extra_env`` adds settings for that process (e.g. a smaller ``DB_POOL_MAX_SIZE``);
    ``port`` is a free one unless given."""
    port = port or _free_port()
    env = os.environ | SERVER_ENV | {"DATABASE_URL": _database_url()} | (extra_env or {})
    with log.open("w") as out:
        proc = subprocess.Popen(
            webserver.command("127.0.0.1", port), env=env, cwd=settings.BASE_DIR, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def aiw_server(django_db_setup, tmp_path_factory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a uvicorn process serving the test database.

    Tests that write data the server must see use ``django_db(transaction=True)``.
    """
    with live_server_process(tmp_path_factory.mktemp("web") / "web.log") as url:
        yield url


@pytest.fixture
def fresh_server(django_db_setup, transactional_db, tmp_path) -> Iterator[str]:
    """A server started for this test alone. Every flush between transactional tests
    recreates content types under new ids, which a long-running server has cached, so
    django-guardian per-object grants need a server that started after the last flush."""
    with live_server_process(tmp_path / "web.log") as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Async tests query from executor threads whose connections outlive the test; end them
    so the test database can be dropped at the end of the session."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def twin(db) -> Twin:
    """The plant twin, granted to every role group (view; operate for all but viewers), as
    the demo sets it up: whether role groups carry twin access globally is policy's choice."""
    plant = Twin.objects.create(slug="plant", name="Test plant")
    for group in Group.objects.exclude(name="viewer"):
        assign_perm("twins.operate_twin", group, plant)
    for group in Group.objects.all():
        assign_perm("twins.view_twin", group, plant)
    return plant


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    """The role users are made with passwords; PBKDF2 would cost ~1.5 s per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Rate-limit windows are keyed by token id, and ids restart with each test database."""
    caches["aiw"].clear()


@pytest.fixture
def make_token(users) -> Callable[..., str]:
    """``make_token(role="agent", scopes=["read"], **kw)`` → the plaintext of a new token."""

    def make(role: str = "agent", scopes: list[str] | None = None, user=None, **extra) -> str:
        owner = user or users[role]
        return services.issue_token(user=owner, name=f"{owner}-token", scopes=scopes,
                                    **extra)[1]

    return make


@pytest.fixture
def agent_token(make_token) -> str:
    return make_token("agent", ["read", "write"])


def touch(twin, n: int = 1, actor: str = "test", pad: int = 0) -> list[int]:
    """Commit ``n`` changes of ``twin`` through ``record_change``; returns their event ids.

    Each event's data is the twin's twin.v1; ``pad`` sets its description to that many
    characters (large events for buffer tests).
    """
    state = dict(TwinSerializer(twin).data) | ({"description": "x" * pad} if pad else {})
    ids = []
    for _ in range(n):
        with transaction.atomic():
            after = state
            ids.append(record_change(actor=actor, action="twin.touch", resource_type="twin",
                                     resource_id=twin.pk, operation="updated", twin=twin,
                                     after=after).id)
    return ids


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
