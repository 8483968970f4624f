"""Dashboard pages: the run page (chart, progress, engine, timing, cancel) and the asset
page's what-if model table."""

from __future__ import annotations

import pytest
from django.utils import timezone

from simulation import services
from simulation.models import SimulationStatus
from simulation.tests.factories import linear_request, stored_run, tail_request, user_on_twin
from tests.fixtures import T0, _client_for, ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db


def finished_run(user, body=None):
    return services.submit_run(body or linear_request(), actor=user).run


def test_the_run_page_shows_the_histogram_with_percentiles_and_constraint_lines(
        agent_client, users):
    run = finished_run(users["agent"])
    page = agent_client.get(f"/sim/runs/{run.pk}/view").content.decode()
    assert page.count('<svg class="chart"') == 1  # one output metric: power
    assert page.count('class="pct"') == 3  # p5, p50, p95
    assert 'class="limit"' in page and "power &gt; 8.5" in page
    p_breach = run.result["constraints"][0]["p_breach"]
    assert f"{p_breach:.4f}" in page
    assert "auto: not a single-input tail request" in page  # why this engine
    assert "<script>" not in page  # finished: no polling


def test_a_running_run_page_shows_its_progress_follows_the_feed_and_offers_cancel(
        agent_client, users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING,
                     started_at=timezone.now(), progress=0.5, samples_done=5000,
                     samples_target=10000)
    page = agent_client.get(f"/sim/runs/{run.pk}/view").content.decode()
    assert 'value="0.500000"' in page and "50 % (5,000 / 10,000 samples)" in page
    assert f'class="run-progress" data-run="{run.pk}"' in page
    # No polling of the run (issue 15): the page follows the run's events on the change feed.
    assert 'fetch(url' not in page and "data-feed-cursor=" in page
    assert f'data-live-resource="simulation:{run.pk}"' in page
    # Its progress events move the bar in place (static/simulation_live.js).
    assert 'data-live-types="simulation,simulation.progress"' in page
    assert "simulation_live.js" in page
    assert f'action="/sim/runs/{run.pk}/view/cancel"' in page


def test_the_cancel_button_cancels_and_returns_to_the_page(agent_client, users):
    run = stored_run(created_by=users["agent"])
    response = agent_client.post(f"/sim/runs/{run.pk}/view/cancel")
    assert response.status_code == 302 and response["Location"] == f"/sim/runs/{run.pk}/view"
    run.refresh_from_db()
    assert run.status == SimulationStatus.CANCELLED


def test_a_viewer_sees_the_page_without_a_cancel_button(viewer_client, pump):
    run = stored_run(pump, status=SimulationStatus.RUNNING)
    page = viewer_client.get(f"/sim/runs/{run.pk}/view").content.decode()
    assert "Simulation" in page and "/view/cancel" not in page


def test_the_run_page_of_a_quantum_run_shows_the_estimate_and_circuit(agent_client, users):
    run = stored_run(created_by=users["agent"], request=tail_request(), engine="quantum_iae")
    run = services.execute_run(run.pk)
    page = agent_client.get(f"/sim/runs/{run.pk}/view").content.decode()
    assert f"{run.result['estimate']:.5f}" in page
    assert "3 state qubits (6 total)" in page


def test_the_run_page_is_scoped_and_needs_a_login(client, django_user_model, pump):
    run = stored_run(pump)
    assert client.get(f"/sim/runs/{run.pk}/view").status_code == 302  # to the login page
    stranger = user_on_twin(django_user_model, "stranger", "agent", pump.twin, None)
    assert _client_for(stranger).get(f"/sim/runs/{run.pk}/view").status_code == 404


def test_the_asset_page_renders_the_fit_report_as_a_table(viewer_client, pump, settings):
    settings.SIMULATION_FIT_ROWS = 100
    ingest_matrix(pump, normal_pump_matrix(100))
    model = services.fit_whatif_model(pump)
    page = viewer_client.get("/twins/plant/pump-1/").content.decode()
    pressure = model.fit_report["metrics"]["Pressure"]
    assert "<th>R²</th>" in page and "{&#x27;" not in page  # a table, not a pprint
    assert f"{pressure['r2']:.3f}" in page and f"{pressure['resid_std']:.4f}" in page
    assert "at the start of the asset's telemetry" in page


def test_the_asset_page_names_the_declared_normal_period(admin_client, pump):
    ingest_matrix(pump, normal_pump_matrix(60))
    services.refit_whatif_model(pump, start=T0, end=T0.replace(second=39), actor="test")
    page = admin_client.get("/twins/plant/pump-1/").content.decode()
    assert "Fitted on 40 readings" in page
    assert "declared normal period 2024-01-01 00:00:00 – 2024-01-01 00:00:39" in page


def test_the_run_list_shows_a_running_runs_progress_bar_that_follows_the_feed(
        agent_client, users):
    """GIVEN a running run and a finished one, THEN the list shows a progress bar in words
    for the running one only, marked with its run id for static/simulation_live.js, and the
    list's fragment asks the stream for simulation.progress events."""
    running = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING,
                         started_at=timezone.now(), progress=0.4213, samples_done=4213,
                         samples_target=10_000)
    done = finished_run(users["agent"])
    page = agent_client.get("/simulations/").content.decode()
    assert f'data-run="{running.pk}"' in page and f'data-run="{done.pk}"' not in page
    assert "42 % (4,213 / 10,000 samples)" in page
    assert 'data-fragment="list" data-live-types="simulation,simulation.progress"' in page
    assert "simulation_live.js" in page
    fragment = agent_client.get("/simulations/?fragment=list").content.decode()
    assert f'data-run="{running.pk}"' in fragment and "<html" not in fragment


def test_a_quantum_run_counts_shots(agent_client, users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING,
                     engine="quantum_iae", progress=1.0, samples_done=800, samples_target=800)
    page = agent_client.get(f"/sim/runs/{run.pk}/view").content.decode()
    assert "100 % (800 / 800 shots)" in page
