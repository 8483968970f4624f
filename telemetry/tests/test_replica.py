"""The telemetry query API reads samples from the read replica when one is configured, and
everything else (scoping, writes) stays on the primary.

A second database on the same PostgreSQL server stands in for the replica: migrated like the
primary, then given a sample the primary does not have, so an answer shows where it was read.
The requests run in a child process started with ``DATABASE_REPLICA_URL``, as a deployment
sets it (Django's test case refuses connections to an alias added during a test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connections

from telemetry.replica import from_replica, query_alias
from tests.test_deploy import REPO
from twins.env import database_url_of

pytestmark = pytest.mark.django_db(transaction=True)

_READ_THROUGH_THE_API = """
import json, os
from datetime import UTC, datetime, timedelta
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from telemetry.models import TelemetrySample
from twins.models import Asset

call_command("migrate", database="replica", verbosity=0)
pump = Asset.objects.get(slug="pump-1")
t0 = datetime(2024, 1, 1, tzinfo=UTC)
def sample(using, seconds, value):
    TelemetrySample.objects.using(using).create(
        asset_id=pump.pk, metric="Pressure", ts=t0 + timedelta(seconds=seconds), value=value)
sample("default", 0, 1.0)
sample("replica", 1, 2.0)
client = Client()
client.force_login(get_user_model().objects.get(username=os.environ["AGENT"]))
window = {"twin": "plant", "asset": "pump-1", "metric": "Pressure", "start": t0.isoformat(),
          "end": (t0 + timedelta(minutes=1)).isoformat()}
latest = client.get("/telemetry/latest", {"twin": "plant", "asset": "pump-1"}).json()
query = client.get("/telemetry/query", window).json()
aggregate = client.get("/telemetry/aggregate", window | {"bucket": "1m"}).json()
event = {"event_id": "7b0d3c55-3f4e-4a8e-9d2c-0d6a3c1e9f10", "twin_id": "plant",
         "asset_id": "pump-1", "ts": (t0 + timedelta(seconds=2)).isoformat(),
         "metrics": {"Pressure": 3.0}}
ingest = client.post("/telemetry/ingest", json.dumps([event]), content_type="application/json")
print(json.dumps({
    "latest": [m["value"] for m in latest["metrics"] if m["metric"] == "Pressure"],
    "query": [row["value"] for row in query["results"]],
    "aggregate": aggregate["series"][0]["values"]["avg"],
    "ingest": ingest.status_code,
    "written": {alias: TelemetrySample.objects.using(alias).filter(value=3.0).count()
                for alias in ("default", "replica")},
}))
"""


def _admin_sql(sql: str) -> None:
    with psycopg.connect(
        database_url_of(connections["default"].settings_dict), autocommit=True
    ) as conn:
        conn.execute(sql)


@pytest.fixture
def replica_url():
    """A second, empty database next to the test database; dropped after."""
    settings_dict = connections["default"].settings_dict
    name = settings_dict["NAME"] + "_replica"
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield database_url_of(settings_dict | {"NAME": name})
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_query_api_reads_samples_from_the_replica_and_writes_go_to_the_primary(
    replica_url, users, pump, tmp_path
):
    """GIVEN a primary with Pressure 1.0 and a 'replica' with a later Pressure 2.0
    WHEN an agent reads /telemetry/latest, /query and /aggregate, and ingests a sample
    THEN the reads show the replica's sample, and the new sample is stored on the primary."""
    env = os.environ | {
        "DATABASE_URL": database_url_of(connections["default"].settings_dict),
        "DATABASE_REPLICA_URL": replica_url,
        "OPSTWIN_DATA_DIR": str(tmp_path),
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "opstwin_site.settings",
        "AGENT": users["agent"].username,
    }
    result = subprocess.run(
        [sys.executable, "-c", _READ_THROUGH_THE_API],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["latest"] == [2.0]
    assert answers["query"] == [2.0]
    assert answers["aggregate"] == [2.0]
    assert answers["ingest"] == 201
    assert answers["written"] == {"default": 1, "replica": 0}


def test_without_a_replica_telemetry_reads_use_the_primary(settings):
    assert "replica" not in settings.DATABASES
    with from_replica():
        assert query_alias() == "default"
    assert settings.DATABASE_ROUTERS == ["telemetry.replica.TelemetryReplicaRouter"]
