"""Inline work on POST /sim/run is bounded by its estimated cost, not only its sample count;
queued work is bounded by a time limit; inputs are capped."""

from __future__ import annotations

import json

import pytest

from simulation.engine import choose_engine
from simulation.models import SimulationRun, SimulationStatus
from simulation.services.prepare import inline_seconds, runs_inline
from simulation.services.runs import execute_run

pytestmark = pytest.mark.django_db

NORMAL = {"dist": "normal", "params": {"mean": 10.0, "std": 1.0}}
LEVY = {"dist": "levy_stable", "params": {"alpha": 1.5, "beta": 0.0}}


def _post(client, body: dict):
    return client.post("/sim/run", json.dumps(body), content_type="application/json")


@pytest.fixture
def queued(monkeypatch):
    """Queued run ids instead of a Celery round trip (the task itself is tested below)."""
    enqueued: list[int] = []
    monkeypatch.setattr("simulation.tasks.execute_simulation.delay", enqueued.append)
    return enqueued


def test_a_small_run_over_builtin_distributions_still_answers_inline(agent_client):
    response = _post(agent_client, {"inputs": {"x": NORMAL}, "n_samples": 5000, "seed": 1})
    assert response.status_code == 200 and response.json()["status"] == "succeeded"


def test_a_scipy_distribution_is_queued_even_with_few_samples(
    agent_client, queued, django_capture_on_commit_callbacks
):
    """levy_stable's inverse CDF integrates numerically: 20,000 samples once ran 111 s
    inline and slowed every other request."""
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(agent_client, {"inputs": {"x": LEVY}, "n_samples": 2000,
                                        "max_samples": 20000, "seed": 1})
    assert response.status_code == 202
    assert queued == [response.json()["id"]]


def test_many_inputs_are_queued_by_their_estimated_cost(
    agent_client, queued, django_capture_on_commit_callbacks
):
    body = {"inputs": {f"x{i}": NORMAL for i in range(150)}, "n_samples": 1000,
            "max_samples": 20000, "seed": 1}
    assert inline_seconds(choose_engine(body), body) > 0.5
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(agent_client, body)
    assert response.status_code == 202 and len(queued) == 1


def test_more_inputs_than_the_cap_are_a_400_problem(agent_client, settings):
    settings.SIMULATION_MAX_INPUTS = 20
    response = _post(agent_client, {"inputs": {f"x{i}": NORMAL for i in range(21)},
                                    "n_samples": 100})
    assert response.status_code == 400
    assert "SIMULATION_MAX_INPUTS" in response.json()["detail"]
    assert not SimulationRun.objects.exists()


def test_the_inline_budget_is_a_setting(settings):
    body = {"inputs": {"x": NORMAL}, "n_samples": 5000, "max_samples": 5000}
    choice = choose_engine(body)
    settings.SIMULATION_SYNC_MAX_SECONDS = 0.5
    assert runs_inline(choice, body) is True
    settings.SIMULATION_SYNC_MAX_SECONDS = 0.0001
    assert runs_inline(choice, body) is False


def test_a_queued_run_past_its_time_limit_fails_with_the_reason(
    agent_client, queued, settings, django_capture_on_commit_callbacks
):
    """GIVEN a queued levy_stable run WHEN it runs longer than SIMULATION_MAX_SECONDS (a
    real SIGALRM stands in for Celery's soft time limit, which is delivered the same way)
    THEN the run ends failed, naming the limit, instead of holding a worker."""
    import signal

    from celery.exceptions import SoftTimeLimitExceeded

    settings.SIMULATION_MAX_SECONDS = 1

    def limit(*_):
        raise SoftTimeLimitExceeded()

    with django_capture_on_commit_callbacks(execute=True):
        run_id = _post(agent_client, {"inputs": {"x": LEVY}, "n_samples": 200000,
                                      "max_samples": 200000, "seed": 1}).json()["id"]
    previous = signal.signal(signal.SIGALRM, limit)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        run = execute_run(run_id)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert run.status == SimulationStatus.FAILED
    assert "SIMULATION_MAX_SECONDS = 1" in run.error
