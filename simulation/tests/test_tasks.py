"""Simulation jobs on a real Celery worker through Redis: queued runs, live progress,
cancellation, a quantum run end to end; and the job's building blocks without a worker."""

from __future__ import annotations

import json
import threading

import pytest

from simulation import services
from simulation.models import SimulationRun, SimulationStatus
from simulation.services.progress import CancelFlag, ProgressWriter
from simulation.tests.factories import linear_request, stored_run, tail_request, wait_until
from twins.models import AuditEntry, ChangeEvent

FINISHED = ("succeeded", "failed", "cancelled")


def post_run(client, body):
    return client.post("/sim/run", json.dumps(body), content_type="application/json")


def finished(run_id: int) -> bool:
    return SimulationRun.objects.filter(pk=run_id, status__in=FINISHED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_large_run_is_queued_then_run_by_a_worker_and_read_back_at_its_location(
        agent_client, worker):
    """GIVEN a run too large to answer inline, WHEN it is posted, THEN the API answers 202 with
    a Location, a worker on Redis runs it, and the Location serves the finished run."""
    response = post_run(agent_client, linear_request(n_samples=50_000, rse_target=1.0))
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert wait_until(lambda: finished(run_id))
    run = agent_client.get(response["Location"]).json()
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["engine_used"] == "monte_carlo"
    assert run["samples_done"] == run["result"]["n_samples"] == 50_000
    assert run["progress"] == 1.0
    assert run["started_at"] is not None and run["duration_s"] >= 0
    events = ChangeEvent.objects.filter(resource_id=str(run_id), resource_type="simulation")
    assert [e.data["status"] for e in events.order_by("id")] == ["queued", "running", "succeeded"]


class PausingProgress(ProgressWriter):
    """The real progress writer, which then holds the worker after its first write until the
    test releases it: the run is observably mid-way, with no timing involved."""

    reached, release = threading.Event(), threading.Event()

    def __call__(self, done: int, total: int) -> None:
        super().__call__(done, total)
        if not self.reached.is_set():
            self.reached.set()
            self.release.wait(60)


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_while_running_and_a_cancel_stops_the_run(
        agent_client, worker, settings, monkeypatch):
    """GIVEN a 200,000-sample run on a worker (drawn in chunks of 65,536), WHEN it has written
    its first progress, THEN the API shows it running with 65,536 of 200,000 samples; WHEN it
    is cancelled, THEN it ends cancelled before drawing another chunk."""
    settings.SIMULATION_PROGRESS_SECONDS = settings.SIMULATION_CANCEL_POLL_SECONDS = 0
    PausingProgress.reached.clear()
    PausingProgress.release.clear()
    monkeypatch.setattr("simulation.services.runs.ProgressWriter", PausingProgress)
    body = linear_request(n_samples=200_000, max_samples=200_000)
    run_id = post_run(agent_client, body).json()["id"]
    try:
        assert PausingProgress.reached.wait(60)
        live = agent_client.get(f"/sim/runs/{run_id}").json()
        cancel = agent_client.post(f"/sim/runs/{run_id}/cancel")
    finally:
        PausingProgress.release.set()
    assert (live["status"], live["samples_done"], live["samples_target"]) == (
        "running", 65_536, 200_000)
    assert live["progress"] == pytest.approx(65_536 / 200_000)
    assert cancel.status_code == 202
    assert wait_until(lambda: finished(run_id))
    run = SimulationRun.objects.get(pk=run_id)
    assert run.status == SimulationStatus.CANCELLED
    assert run.error == "cancelled after 65536 samples"
    assert run.result is None
    assert list(AuditEntry.objects.filter(resource_id=str(run_id), resource_type="simulation")
                .order_by("seq").values_list("action", flat=True)) == [
        "simulation.queue", "simulation.start", "simulation.cancel", "simulation.cancelled"]


@pytest.mark.django_db(transaction=True)
def test_a_quantum_tail_request_runs_end_to_end_on_a_worker(agent_client, worker):
    """GIVEN P(x > 1) for x ~ N(0, 1) on the quantum engine with 3 qubits, WHEN it is posted,
    THEN a worker runs IAE on the Aer simulator and the run holds an estimate whose interval
    contains the exact discretised probability, the engine used and why."""
    response = post_run(agent_client, tail_request())
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert wait_until(lambda: finished(run_id), timeout=120)
    run = agent_client.get(f"/sim/runs/{run_id}").json()
    assert run["status"] == "succeeded", run["error"]
    result = run["result"]
    assert (run["engine_requested"], run["engine"], result["engine_used"]) == (
        "quantum_iae", "quantum_iae", "quantum_iae")
    assert result["num_qubits"] == 3 and result["total_qubits"] == 6
    low, high = result["confidence_interval"]
    assert low <= result["exact_probability"] <= high
    assert result["constraints"][0]["p_breach"] == result["estimate"]
    assert run["samples_done"] == result["shots"] * result["circuits"] > 0
    assert run["progress"] == 1.0


@pytest.mark.django_db
def test_executing_a_run_that_is_no_longer_queued_leaves_it_alone(users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.CANCELLED)
    assert services.execute_run(run.pk).status == SimulationStatus.CANCELLED
    assert not AuditEntry.objects.filter(action="simulation.start").exists()
    assert services.execute_run(run.pk + 1000) is None


@pytest.mark.django_db
def test_a_queued_run_executed_inline_succeeds_and_is_published(users):
    run = stored_run(created_by=users["agent"])
    done = services.execute_run(run.pk)
    assert done.status == SimulationStatus.SUCCEEDED
    assert done.result["metrics"]["power"]["mean"] == pytest.approx(8.1, abs=0.05)
    assert list(AuditEntry.objects.order_by("seq").values_list("action", flat=True)) == [
        "simulation.start", "simulation.succeeded"]


@pytest.mark.django_db
def test_a_run_that_fails_at_run_time_ends_failed_with_the_engine_message(users):
    run = stored_run(created_by=users["agent"])
    run.request = linear_request(method="no-such-method")
    run.save()
    done = services.execute_run(run.pk)
    assert done.status == SimulationStatus.FAILED
    assert "unknown sampling method" in done.error


@pytest.mark.django_db
def test_progress_is_written_at_most_once_per_interval(users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING)
    write = ProgressWriter(run.pk, interval=3600)
    write(100, 400)
    write(300, 400)  # within the interval: dropped
    run.refresh_from_db()
    assert (run.samples_done, run.samples_target, run.progress) == (100, 400, 0.25)


@pytest.mark.django_db
def test_progress_is_not_written_once_the_run_has_finished(users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.SUCCEEDED, progress=1.0)
    ProgressWriter(run.pk, interval=0)(1, 4)
    run.refresh_from_db()
    assert run.progress == 1.0


@pytest.mark.django_db
def test_the_cancel_flag_reads_the_row_and_stays_set(users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING)
    flag = CancelFlag(run.pk, interval=0)
    assert flag() is False
    services.cancel_run(run.pk, actor=users["agent"])
    assert flag() is True
    SimulationRun.objects.filter(pk=run.pk).update(cancel_requested_at=None)
    assert flag() is True
