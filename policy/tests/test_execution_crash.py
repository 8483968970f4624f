"""A real Celery worker SIGKILLed in the middle of an execution, then recovered.

Processes: this test (the web side: the API request that claims, and the simulated asset on
Mosquitto), worker A (``celery worker -Q actions``, started with ``POLICY_FAULT_POINT``: it
SIGKILLs itself during the command's first attempt, after the lease commits and before or
after the send), and worker B (a healthy worker that runs the sweeper's beat task
``policy.tasks.recover_commands``, sent to it the way beat sends it). Both workers use the
test database and the real Redis broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from opstwin_site.celery import app as celery_app
from policy import services, tasks
from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.signing import public_key_b64
from policy.tests import factories
from telemetry.models import Anomaly
from twins.env import database_url_of
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)
SETTLE_S = 90  # generous: two worker start-ups and one lapsed lease on a loaded machine


@pytest.fixture
def broker(redis_url):
    """This process enqueues to the real Redis broker (not eager) for the test's span."""
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False)
    yield redis_url
    celery_app.conf.update(broker_url="memory://", task_always_eager=True)


@pytest.fixture
def worker_env(broker, mqtt_url, prefix, signing_key) -> dict:
    return os.environ | {
        "DATABASE_URL": database_url_of(connection.settings_dict), "REDIS_URL": broker,
        "MQTT_URL": mqtt_url, "MQTT_TOPIC_PREFIX": prefix, "CELERY_TASK_ALWAYS_EAGER": "0",
        "POLICY_PUBLIC_KEYS": f"test:{public_key_b64(signing_key)}",
        "MQTT_COMMAND_ACK_TIMEOUT": "2", "POLICY_COMMAND_EFFECT_TIMEOUT": "2",
        "POLICY_FAULT_POINT": "", "LOG_LEVEL": "INFO",
    }


@contextmanager
def worker(env: dict, log: Path):
    """A real ``celery worker`` process on the actions queue; stopped (by its pid) after."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "opstwin_site", "worker", "-Q", "actions",
             "-P", "solo", "-n", f"crash-{uuid.uuid4().hex[:8]}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            env=env, cwd=settings.BASE_DIR, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def settle(proposal_id: int) -> Proposal:
    """Send the beat task until the proposal leaves executing (or SETTLE_S passes)."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        proposal = Proposal.objects.get(pk=proposal_id)
        if proposal.status != ProposalStatus.EXECUTING:
            return proposal
        tasks.recover_commands.delay()
        time.sleep(1.0)
    return Proposal.objects.get(pk=proposal_id)


def an_anomaly(pump) -> Anomaly:
    now = timezone.now()
    return Anomaly.objects.create(
        asset=pump, metric="Volume Flow RateRMS", detector="zscore", kind="drift",
        severity="critical", score=1.0, started_at=now, last_seen_at=now,
        features={"value": 100.0, "baseline_mean": 125.0})


@pytest.mark.parametrize(("point", "deliveries"), [("after_claim", 1), ("after_send", 2)])
def test_a_worker_killed_mid_execution_is_recovered_with_one_effect(
        point, deliveries, trusted, pump, users, executor_client, device, worker_env,
        tmp_path, settings):
    """GIVEN an execution claimed over the API (202) and queued, WHEN the worker that took it
    is SIGKILLed after the claim (before the send, or after the send before recording), THEN
    the proposal stays executing and the asset busy; once the lease lapses the sweeper on a
    healthy worker re-sends it under the same command id: the proposal ends executed, the
    asset applied the command once, and automatic responses to its anomalies resume."""
    settings.SIMULATION_SAMPLES = 2000
    proposal = factories.approved(pump, users["supervisor"])
    # no simulated band: verification is inconclusive at once, so an executed proposal
    # leaves the asset idle and the "responses resume" check needs no verification window
    Proposal.objects.filter(pk=proposal.pk).update(simulation=None)
    anomaly = an_anomaly(pump)

    with worker(worker_env | {"POLICY_FAULT_POINT": point}, tmp_path / "a.log") as doomed:
        response = executor_client.post(f"/proposals/{proposal.pk}/execute")
        assert response.status_code == 202
        assert doomed.wait(timeout=SETTLE_S) == -signal.SIGKILL, (tmp_path / "a.log").read_text()
    killed_at = time.monotonic()
    stuck = Proposal.objects.get(pk=proposal.pk)
    assert stuck.status == ProposalStatus.EXECUTING and stuck.execution["attempts"] == 1
    assert len(device.received) == deliveries - 1
    assert services.respond_to_anomaly(anomaly.pk) is None  # the asset is busy

    with worker(worker_env, tmp_path / "b.log"):
        done = settle(proposal.pk)
    recovered_s = time.monotonic() - killed_at
    print(f"\n{point}: recovered {recovered_s:.1f} s after the SIGKILL (lease "
          f"{2 * 2 + 2 + 1:g} s)")
    assert done.status == ProposalStatus.EXECUTED, (tmp_path / "b.log").read_text()[-3000:]
    assert done.execution["acknowledged"] is True and done.execution["attempts"] == 2
    assert [a["command_id"] for a in device.applied] == [f"proposal-{proposal.pk}"]
    assert len(device.received) == deliveries
    assert list(AuditEntry.objects.filter(resource_type="proposal",
                                          resource_id=str(proposal.pk))
                .values_list("action", flat=True)) == [
        "proposal.execute", "proposal.execute_resent", "proposal.executed",
        "alert.verification_inconclusive"]
    response = services.respond_to_anomaly(anomaly.pk)
    assert response is not None and response.anomaly_id == anomaly.pk
