"""Fixtures shared by every app's tests: services, role clients, a SKAB-shaped twin.

Services: tests that need Mosquitto or Redis use ``mqtt_url`` / ``redis_url``. With
``OPSTWIN_REQUIRE_SERVICES=1`` (CI) a missing service fails the test; otherwise it skips.
"""

from __future__ import annotations

import importlib
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import NoReturn
from urllib.parse import urlsplit

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.test import Client, TestCase

from demo.skab import METRICS
from opstwin_site.celery import app as celery_app
from telemetry.services import RawPayload, ingest_batch
from twins.choices import AssetKind, Role
from twins.models import Asset, Twin
from twins.roles import grant_all_twins, grant_twin

REQUIRE_SERVICES = os.environ.get("OPSTWIN_REQUIRE_SERVICES") == "1"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def missing(message: str) -> NoReturn:
    """Something a test needs is missing: fail under OPSTWIN_REQUIRE_SERVICES=1 (CI), where
    it must be there; skip otherwise (a developer's laptop)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and OPSTWIN_REQUIRE_SERVICES=1")
    pytest.skip(message)


def _service(env: str, default_port: int) -> str:
    url = os.environ.get(env)
    if url and _reachable(url, default_port):
        return url
    missing(f"{env} is {'unreachable' if url else 'not set'}")


@pytest.fixture
def mqtt_url(settings) -> str:
    """URL of a real MQTT broker (Mosquitto); also installed as settings.MQTT_URL."""
    url = _service("MQTT_URL", 1883)
    settings.MQTT_URL = url
    return url


@pytest.fixture
def redis_url() -> str:
    return _service("REDIS_URL", 6379)


def pytest_unconfigure(config):
    """Stop the embedded PostgreSQL if this test session started it (stop what you start)."""
    from opstwin_site.embedded import stop_embedded_database

    stop_embedded_database()


@pytest.fixture(scope="session", autouse=True)
def ingest_status_dir(tmp_path_factory):
    """Ingest status files go to a temporary folder, never the project's ``.opstwin/ingest``
    (the status page of a demo run on the same folder would show them). Child processes
    started by tests inherit it through ``INGEST_STATUS_DIR``."""
    from django.conf import settings

    path = tmp_path_factory.mktemp("ingest-status")
    previous_env, previous = os.environ.get("INGEST_STATUS_DIR"), settings.INGEST_STATUS_DIR
    os.environ["INGEST_STATUS_DIR"], settings.INGEST_STATUS_DIR = str(path), path
    yield path
    settings.INGEST_STATUS_DIR = previous
    if previous_env is None:
        os.environ.pop("INGEST_STATUS_DIR", None)
    else:
        os.environ["INGEST_STATUS_DIR"] = previous_env


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """MD5 instead of PBKDF2 for test users: ~1.5 s saved per test that creates users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def eager_celery():
    """Tasks run inline in tests unless a test starts a real worker (see test_celery)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def make_user(django_user_model, role: str | None, name: str | None = None):
    user = django_user_model.objects.create_user(username=name or f"{role or 'outsider'}-user",
                                                 password="pw")
    if role:
        user.groups.add(Group.objects.get(name=role))
        grant_all_twins(user, role)  # roles are per twin now; these users act on every twin
    if role == Role.ADMIN:
        user.is_staff = True
        user.save()
    return user


def grant_only(users: dict, twin, roles=("viewer", "agent", "executor", "supervisor")) -> None:
    """Narrow each of ``roles``' users (from ``users``) to ``twin`` alone, granted object by
    object as an admin does on the twin's "Object permissions" page (``make_user`` grants every
    twin); admins keep every twin."""
    for role in roles:
        users[role].user_permissions.clear()
        grant_twin(twin, to=users[role], role=role)


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def users(db, django_user_model) -> dict:
    """One user per role plus an outsider with no role, keyed by role name."""
    roles = [str(r) for r in Role]
    made = {role: make_user(django_user_model, role) for role in roles}
    made["outsider"] = make_user(django_user_model, None)
    return made


@pytest.fixture
def viewer_client(users): return _client_for(users["viewer"])
@pytest.fixture
def agent_client(users): return _client_for(users["agent"])
@pytest.fixture
def executor_client(users): return _client_for(users["executor"])
@pytest.fixture
def supervisor_client(users): return _client_for(users["supervisor"])
@pytest.fixture
def admin_client(users): return _client_for(users["admin"])
@pytest.fixture
def outsider_client(users): return _client_for(users["outsider"])


#: Data migrations whose rows the code reads (built-in asset types, default detectors), in order.
DATA_MIGRATIONS = [("twins.migrations.0004_builtin_asset_types", "seed"),
                   ("telemetry.migrations.0003_default_detector_configs", "forward"),
                   ("telemetry.migrations.0006_stream_state_generic_default", "forward"),
                   ("telemetry.migrations.0008_pump_default_ewma_adaptive", "forward")]


@pytest.fixture
def migrated_rows(transactional_db) -> None:
    """The data migrations' rows, as a freshly migrated database has them: a transactional
    test's flush deletes them for the tests after it. Each step is idempotent."""
    from django.apps import apps

    for module, function in DATA_MIGRATIONS:
        getattr(importlib.import_module(module), function)(apps, None)


@pytest.fixture
def twin(db) -> Twin:
    return Twin.objects.create(slug="plant", name="Test plant")


@pytest.fixture
def pump(twin) -> Asset:
    """A pump asset with the eight SKAB metrics."""
    return Asset.objects.create(
        twin=twin, slug="pump-1", name="Pump 1", kind=AssetKind.PUMP,
        metrics=[{"name": m, "unit": u} for m, u in METRICS],
    )


def event(asset: Asset, ts: datetime, metrics: dict, **extra) -> dict:
    """A valid telemetry.v1 event for ``asset``."""
    return {"event_id": str(uuid.uuid4()), "twin_id": asset.twin.slug, "asset_id": asset.slug,
            "ts": ts.isoformat(), "metrics": metrics} | extra


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ingest_matrix(
    asset: Asset, X: np.ndarray, *, start: datetime = T0, names=None, batch: int = 500
) -> None:
    """Ingest rows of ``X`` (n, m) at 1 s spacing through the real ingest service."""
    names = names or [m for m, _ in METRICS][: X.shape[1]]
    payloads = [
        RawPayload(body=event(asset, start + timedelta(seconds=i),
                              dict(zip(names, map(float, row), strict=True))))
        for i, row in enumerate(X)
    ]
    for k in range(0, len(payloads), batch):
        # Run on_commit work (detection, responses) as a committed transaction would.
        with TestCase.captureOnCommitCallbacks(execute=True):
            report = ingest_batch(payloads[k : k + batch], source="replay")
        assert not report.rejected, report.rejected


def normal_pump_matrix(n: int, seed: int = 0) -> np.ndarray:
    """(n, 8) SKAB-like normal operation: flow drives current and pressure, plus noise."""
    rng = np.random.default_rng(seed)
    flow = 125 + rng.normal(0, 1.0, n)
    current = 0.02 * flow + rng.normal(0, 0.02, n)
    pressure = 0.008 * flow + rng.normal(0, 0.01, n)
    return np.column_stack([
        0.21 + rng.normal(0, 0.003, n), 0.27 + rng.normal(0, 0.003, n), current, pressure,
        89 + rng.normal(0, 0.2, n), 28.6 + rng.normal(0, 0.05, n), 229 + rng.normal(0, 0.8, n),
        flow,
    ])
