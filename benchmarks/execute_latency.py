"""Latency of ``POST /proposals/{id}/execute`` and time to the recorded outcome (prints figures).

An executor executes ROUNDS approved proposals through the API (Django's test client, real
transactions, so ``on_commit`` work runs as in production) while the simulated asset answers
on the real broker (after one warm-up round), then ROUNDS more with the asset silent (no ack:
the command times out).
Figures per case: the request's latency (p50/max) and the time from the request until the
proposal left ``executing`` (the outcome recorded, by the request itself when execution is
synchronous, by a Celery worker on the ``actions`` queue when the request answers 202).

A Celery worker process (``-Q actions -P solo``) runs on ``REDIS_URL`` for the whole run; with
a synchronous API it simply stays idle. Needs DATABASE_URL, REDIS_URL and MQTT_URL (Mosquitto).
Runs in a scratch database ``<DATABASE_URL's name>_execbench`` (created, migrated, dropped).
Run: ``python benchmarks/execute_latency.py [--rounds 10 --effect-timeout 3]``. Bounded: under
a minute plus ROUNDS × effect-timeout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--effect-timeout", type=float, default=3.0,
                        help="POLICY_COMMAND_EFFECT_TIMEOUT (s) for the silent-asset case")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return parser.parse_args()


def _scratch(url: str, suffix: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + suffix
    admin = urlunsplit(parts._replace(path="/postgres"))
    return name, admin, urlunsplit(parts._replace(path=f"/{name}"))


def _admin_sql(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def _setup(key, effect_timeout: float):
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from policy.tests import factories
    from twins.choices import AssetKind
    from twins.models import Asset, Twin
    from twins.roles import grant_twin

    call_command("migrate", verbosity=0)
    twin = Twin.objects.create(slug="bench", name="Bench")
    pump = Asset.objects.create(twin=twin, slug="pump-1", name="Pump", kind=AssetKind.PUMP,
                                metrics=[{"name": m} for m in factories.NORMAL])
    factories.reading(pump)
    factories.signed_policy(twin, key)
    supervisor = User.objects.create_user("bench-supervisor", password="pw")
    supervisor.groups.add(Group.objects.get(name="supervisor"))
    executor = User.objects.create_user("bench-executor", password="pw")
    executor.groups.add(Group.objects.get(name="executor"))
    grant_twin(twin, to=supervisor, role="supervisor")
    grant_twin(twin, to=executor, role="executor")
    return twin, pump, supervisor, executor


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "opstwin_site", "worker", "-Q", "actions",
         "-P", "solo", "--loglevel", "WARNING"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _round(client, pump, supervisor, deadline_s: float) -> tuple[float, float, int]:
    from policy.choices import ProposalStatus
    from policy.models import Proposal
    from policy.tests import factories

    proposal = factories.approved(pump, supervisor)
    started = time.perf_counter()
    response = client.post(f"/proposals/{proposal.pk}/execute")
    latency = time.perf_counter() - started
    deadline = time.monotonic() + deadline_s
    while Proposal.objects.filter(pk=proposal.pk, status=ProposalStatus.EXECUTING).exists() \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    return latency, time.perf_counter() - started, response.status_code


def _report(label: str, rounds: list[tuple[float, float, int]]) -> None:
    latency = [r[0] * 1000 for r in rounds]
    outcome = [r[1] * 1000 for r in rounds]
    codes = sorted({r[2] for r in rounds})
    print(f"{label:<14} HTTP {codes}: request p50 {statistics.median(latency):8.1f} ms, "
          f"max {max(latency):8.1f} ms; outcome recorded after p50 "
          f"{statistics.median(outcome):8.1f} ms, max {max(outcome):8.1f} ms")


def main() -> None:
    args = _args()
    missing = [v for v in ("DATABASE_URL", "REDIS_URL", "MQTT_URL") if not os.environ.get(v)]
    if missing:
        print(f"execute_latency: skipped, needs {', '.join(missing)} (a worker and Mosquitto)")
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name, admin_url, scratch_url = _scratch(os.environ["DATABASE_URL"], "_execbench")
    _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}"')
    _admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    key = Ed25519PrivateKey.generate()
    from policy.signing import public_key_b64

    env = os.environ | {
        "DATABASE_URL": scratch_url, "MQTT_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "POLICY_PUBLIC_KEYS": f"test:{public_key_b64(key)}", "CELERY_TASK_ALWAYS_EAGER": "0",
        "POLICY_COMMAND_EFFECT_TIMEOUT": str(args.effect_timeout), "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env | {"DJANGO_SETTINGS_MODULE": "opstwin_site.settings"})
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections
    from django.test import Client
    from django.test.utils import setup_test_environment

    from demo.device import SimulatedDevice

    setup_test_environment()
    worker = _worker(env)
    try:
        twin, pump, supervisor, executor = _setup(key, args.effect_timeout)
        client = Client()
        client.force_login(executor)
        device = SimulatedDevice(settings.MQTT_URL, twin.slug).start()
        _round(client, pump, supervisor, 60)  # warm-up (URL resolver, first connections)
        answered = [_round(client, pump, supervisor, 30) for _ in range(args.rounds)]
        device.stop()
        silent = [_round(client, pump, supervisor, 30) for _ in range(max(2, args.rounds // 3))]
        print(f"execute over the API ({args.rounds} rounds; effect timeout "
              f"{args.effect_timeout:g} s, PUBACK timeout {settings.MQTT_COMMAND_ACK_TIMEOUT:g} s)")
        _report("asset answers", answered)
        _report("asset silent", silent)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        connections.close_all()
        if not args.keep:
            _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
