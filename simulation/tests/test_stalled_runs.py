"""A run whose worker died mid-run (SIGKILL, OOM) is restarted once its lease has passed,
exactly once, and a run still within its lease is left to its worker.
``benchmarks/faults.py`` kills a real worker mid-simulation; these tests pin the rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from simulation import services, tasks
from simulation.models import SimulationStatus
from simulation.tests.factories import stored_run
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db


def started(seconds_ago: float):
    return timezone.now() - timedelta(seconds=seconds_ago)


def actions(run) -> list[str]:
    return list(
        AuditEntry.objects.filter(resource_type="simulation", resource_id=str(run.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def test_a_run_left_running_past_its_lease_is_restarted_and_finishes_once():
    """GIVEN a run 'running' since before its lease (its worker was killed)
    WHEN beat's requeue task runs (eager Celery: the task runs at once)
    THEN the run is reclaimed once, computed, and succeeds; a second delivery changes nothing."""
    run = stored_run(
        status=SimulationStatus.RUNNING,
        started_at=started(services.run_lease_seconds() + 5),
        progress=0.4,
    )
    assert tasks.requeue_stalled_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == SimulationStatus.SUCCEEDED
    assert run.result["n_samples"] == run.samples_done > 0
    assert tasks.execute_simulation(run.pk) == "succeeded"  # a late redelivery: a no-op
    assert actions(run) == ["simulation.restart", "simulation.succeeded"]


def test_a_run_within_its_lease_is_left_to_its_worker():
    run = stored_run(
        status=SimulationStatus.RUNNING, started_at=started(services.run_lease_seconds() - 30)
    )
    assert tasks.requeue_stalled_runs() == []
    assert tasks.execute_simulation(run.pk) == "running"  # a redelivery does not steal it
    run.refresh_from_db()
    assert run.status == SimulationStatus.RUNNING
    assert actions(run) == []


def test_the_lease_outlasts_the_tasks_hard_time_limit(settings):
    assert services.run_lease_seconds() > tasks.execute_simulation.time_limit
    assert (
        settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
        > tasks.execute_simulation.time_limit
    )
