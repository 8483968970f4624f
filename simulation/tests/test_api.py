"""The simulation API: inline and queued runs, errors, permissions and scope, cancel, feed."""

from __future__ import annotations

import json

import pytest

from simulation.models import SimulationRun, SimulationStatus
from simulation.tests.factories import linear_request, stored_run, tail_request, user_on_twin
from tests.fixtures import _client_for, ingest_matrix, normal_pump_matrix
from twins.models import AuditEntry, ChangeEvent, Twin
from twins.schemas import errors as schema_errors

pytestmark = pytest.mark.django_db


def post_run(client, body):
    return client.post("/sim/run", json.dumps(body), content_type="application/json")


def test_a_small_monte_carlo_run_answers_200_with_the_finished_result(agent_client):
    response = post_run(agent_client, linear_request())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["result"]["engine_used"] == "monte_carlo"
    assert body["engine_requested"] == "auto"
    assert body["result"]["n_samples"] == body["samples_done"] >= 5000
    assert body["progress"] == 1.0
    # power = 0.5 flow + 2 head + 0.1 with flow ~ N(10, 1), head ~ U(1, 2): mean 8.1
    assert body["result"]["metrics"]["power"]["mean"] == pytest.approx(8.1, abs=0.05)
    assert response["Content-Location"] == f"/sim/runs/{body['id']}"
    assert SimulationRun.objects.get(pk=body["id"]).status == SimulationStatus.SUCCEEDED


def test_the_same_seed_reproduces_the_stored_result(agent_client):
    first = post_run(agent_client, linear_request(seed=11)).json()
    second = post_run(agent_client, linear_request(seed=11)).json()
    assert first["id"] != second["id"]
    assert first["result"]["metrics"] == second["result"]["metrics"]


def test_a_drawn_seed_is_stored_in_the_request_so_the_run_can_be_reproduced(agent_client):
    body = linear_request()
    del body["seed"]
    run = post_run(agent_client, body).json()
    assert isinstance(run["seed"], int)
    assert run["request"]["seed"] == run["seed"] == run["result"]["seed"]


def test_a_large_run_answers_202_with_a_location_and_is_queued_on_commit(
        agent_client, django_capture_on_commit_callbacks, monkeypatch):
    enqueued = []
    monkeypatch.setattr("simulation.tasks.execute_simulation.delay", enqueued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_run(agent_client, linear_request(n_samples=50_000))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["result"] is None
    assert response["Location"] == f"/sim/runs/{body['id']}"
    assert enqueued == [body["id"]]  # handed to the worker once the run is committed


def test_a_quantum_request_is_always_queued(agent_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_run(agent_client, tail_request())
    assert response.status_code == 202
    assert response.json()["engine"] == "quantum_iae"
    assert "requested explicitly" in response.json()["engine_reason"]


@pytest.mark.parametrize(("body", "needle"), [
    (linear_request(engine="warp_drive"), "unknown engine 'warp_drive'"),
    ({"inputs": {"x": {"dist": "no_such_dist", "params": {}}}}, "no_such_dist"),
    ({"inputs": {"x": {"dist": "normal", "params": {"mean": 0, "std": -1}}}}, "std"),
    (linear_request(n_samples=10**9), "SIMULATION_MAX_SAMPLES"),
    (linear_request(engine="quantum_iae"), "tail-probability request"),
    ({"pump": {"action": "reduce_load"}}, "pump must be a dict with 'model'"),
])
def test_an_invalid_request_is_a_400_problem_naming_the_part_and_stores_nothing(
        agent_client, body, needle):
    response = post_run(agent_client, body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert needle in response.json()["detail"]
    assert not SimulationRun.objects.exists()


def test_a_body_that_is_not_a_json_object_is_a_400_problem(agent_client):
    response = post_run(agent_client, [1, 2])
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("role", "expected"), [
    ("viewer", 403), ("agent", 200), ("executor", 403), ("supervisor", 200), ("admin", 200),
    ("outsider", 403),
])
def test_running_a_simulation_needs_the_add_simulationrun_permission(users, role, expected):
    assert post_run(_client_for(users[role]), linear_request()).status_code == expected


def test_anonymous_callers_get_401(client):
    assert post_run(client, linear_request()).status_code == 401


@pytest.fixture
def other_pump(db):
    from twins.models import Asset

    twin = Twin.objects.create(slug="other", name="Other plant")
    return Asset.objects.create(twin=twin, slug="pump-9", name="Pump 9", kind="pump")


@pytest.mark.parametrize(("twin_role", "expected"), [(None, 404), ("viewer", 403), ("agent", 200)])
def test_a_run_on_an_asset_is_scoped_to_the_twins_the_caller_may_see_and_operate(
        django_user_model, pump, twin_role, expected):
    user = user_on_twin(django_user_model, "scoped", "agent", pump.twin, twin_role)
    response = post_run(_client_for(user), linear_request(asset="plant/pump-1"))
    assert response.status_code == expected
    if expected == 200:
        assert response.json()["asset"] == "plant/pump-1"


def test_a_malformed_asset_reference_is_a_400(agent_client):
    assert post_run(agent_client, linear_request(asset="no-slash")).status_code == 400


def test_a_run_outside_the_callers_scope_reads_as_404(django_user_model, pump, other_pump):
    user = user_on_twin(django_user_model, "scoped", "agent", pump.twin, "viewer")
    client = _client_for(user)
    mine, theirs = stored_run(pump), stored_run(other_pump)
    assert client.get(f"/sim/runs/{mine.pk}").status_code == 200
    assert client.get(f"/sim/runs/{theirs.pk}").status_code == 404


def test_a_run_without_an_asset_is_visible_to_its_creator_and_to_site_wide_viewers(users):
    run = stored_run(created_by=users["agent"])
    assert _client_for(users["agent"]).get(f"/sim/runs/{run.pk}").status_code == 200
    assert _client_for(users["supervisor"]).get(f"/sim/runs/{run.pk}").status_code == 200
    assert _client_for(users["outsider"]).get(f"/sim/runs/{run.pk}").status_code == 404


def test_reading_a_run_includes_its_progress(agent_client, users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING,
                     progress=0.25, samples_done=16384, samples_target=65536)
    body = agent_client.get(f"/sim/runs/{run.pk}").json()
    assert (body["status"], body["progress"]) == ("running", 0.25)
    assert (body["samples_done"], body["samples_target"]) == (16384, 65536)


def test_cancelling_a_queued_run_ends_it_cancelled_at_once(agent_client, users):
    run = stored_run(created_by=users["agent"])
    response = agent_client.post(f"/sim/runs/{run.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested_at"] is not None
    assert AuditEntry.objects.filter(action="simulation.cancel",
                                     resource_id=str(run.pk)).count() == 1


def test_cancelling_a_running_run_flags_it_and_answers_202(agent_client, users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.RUNNING)
    response = agent_client.post(f"/sim/runs/{run.pk}/cancel")
    assert response.status_code == 202
    run.refresh_from_db()
    assert run.status == SimulationStatus.RUNNING
    assert run.cancel_requested_at is not None


def test_cancelling_a_finished_run_is_a_409_problem(agent_client, users):
    run = stored_run(created_by=users["agent"], status=SimulationStatus.SUCCEEDED)
    response = agent_client.post(f"/sim/runs/{run.pk}/cancel")
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("role", "expected"), [("viewer", 403), ("supervisor", 200),
                                                ("outsider", 404)])
def test_cancelling_needs_the_run_permission_and_the_run_in_scope(pump, users, role, expected):
    run = stored_run(pump)
    assert _client_for(users[role]).post(f"/sim/runs/{run.pk}/cancel").status_code == expected


def test_an_inline_run_is_published_at_start_and_finish_in_the_simulation_v1_shape(
        agent_client):
    run_id = post_run(agent_client, linear_request()).json()["id"]
    events = list(ChangeEvent.objects.filter(resource_type="simulation",
                                             resource_id=str(run_id)).order_by("id"))
    assert [(e.type, e.data["status"]) for e in events] == [
        ("simulation.created", "running"), ("simulation.updated", "succeeded")]
    assert [schema_errors("simulation.v1", e.data) for e in events] == [[], []]
    actions = AuditEntry.objects.filter(resource_type="simulation", resource_id=str(run_id))
    assert list(actions.order_by("seq").values_list("action", "actor")) == [
        ("simulation.start", "agent-user"), ("simulation.succeeded", "simulator")]


def test_a_pump_what_if_on_an_asset_uses_its_fitted_model_and_current_state(
        agent_client, pump, settings):
    settings.SIMULATION_FIT_ROWS = 100
    ingest_matrix(pump, normal_pump_matrix(120))
    response = post_run(agent_client, {
        "asset": "plant/pump-1", "pump": {"action": "reduce_load", "params": {"fraction": 0.2}},
        "constraints": [{"metric": "Volume Flow RateRMS", "op": "<", "limit": 110.0}],
        "n_samples": 4000})
    assert response.status_code == 200, response.json()
    run = response.json()
    assert run["request"]["pump"]["model"] == pump.whatif_model.state
    assert run["request"]["pump"]["state"]["Volume Flow RateRMS"]["n"] == 120
    flow = run["result"]["metrics"]["Volume Flow RateRMS"]["mean"]
    assert flow == pytest.approx(0.8 * 125, abs=1.0)  # 20 % less flow than the normal 125 L/min
    assert run["result"]["constraints"][0]["p_breach"] > 0.9
    assert pump.whatif_model.n_rows == 100


def test_the_openapi_schema_documents_the_run_cancel_and_read_endpoints(agent_client):
    schema = agent_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    run = schema["paths"]["/sim/run"]["post"]
    assert {"200", "202"} <= set(run["responses"])
    assert run["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SimulationRequest")
    assert "post" in schema["paths"]["/sim/runs/{id}/cancel"]
    read = schema["components"]["schemas"]["SimulationRun"]["properties"]
    assert {"progress", "samples_done", "engine_reason"} <= set(read)
