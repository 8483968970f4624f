"""Idempotency-Key on state-changing requests: replay, conflict, per caller, expiry."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from aiw.models import IdempotencyKey
from aiw.tests.conftest import bearer
from aiw.tests.urls import CountingView, FlakyView, SlowView
from tests.fixtures import T0, event

pytestmark = [pytest.mark.django_db, pytest.mark.urls("aiw.tests.urls")]
KEY = {"Idempotency-Key": "order-42"}


@pytest.fixture(autouse=True)
def _reset_probes() -> None:
    CountingView.runs = 0
    FlakyView.calls = 0


def _post(client, body: dict | None = None, headers: dict | None = None, path="/probe/count"):
    return client.post(path, json.dumps(body or {"a": 1}), content_type="application/json",
                       headers=KEY if headers is None else headers)


def test_the_same_key_and_body_replays_the_first_response_without_running_again(agent_client):
    first = _post(agent_client)
    again = _post(agent_client)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and json.loads(again.content)["runs"] == 1
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert CountingView.runs == 1


def test_the_same_key_with_a_different_body_is_a_409_problem(agent_client):
    _post(agent_client, {"a": 1})
    response = _post(agent_client, {"a": 2})
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Idempotency key reused"
    assert CountingView.runs == 1


def test_the_same_key_on_another_path_or_method_is_a_conflict_too(agent_client):
    _post(agent_client)
    assert agent_client.delete("/probe/count", headers=KEY).status_code == 409


def test_keys_belong_to_one_caller(agent_client, supervisor_client):
    _post(agent_client)
    response = _post(supervisor_client)
    assert json.loads(response.content)["runs"] == 2


def test_a_key_whose_first_request_still_runs_is_409_with_retry_after(agent_client, users):
    _post(agent_client, headers={"Idempotency-Key": "probe"})
    IdempotencyKey.objects.filter(key="probe").update(status=None)
    response = _post(agent_client, headers={"Idempotency-Key": "probe"})
    assert response.status_code == 409 and response["Retry-After"] == "1"
    assert CountingView.runs == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_first_requests_run_the_view_once(users):
    """GIVEN a request with a key whose view is still running, WHEN the same request arrives
    again, THEN it is 409 'in progress'; once the first finishes, a retry replays it."""
    SlowView.started.clear()
    SlowView.release.clear()
    client = Client()
    client.force_login(users["agent"])
    first: list = []
    worker = threading.Thread(target=lambda: first.append(_post(client, path="/probe/slow")))
    worker.start()
    assert SlowView.started.wait(10)
    racing = _post(client, path="/probe/slow")
    SlowView.release.set()
    worker.join(10)
    replay = _post(client, path="/probe/slow")
    assert racing.status_code == 409 and racing.json()["title"] == "Request in progress"
    assert first[0].status_code == replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"


def test_a_claim_abandoned_by_a_crashed_process_is_taken_over(agent_client, settings):
    _post(agent_client)
    IdempotencyKey.objects.update(
        status=None, created_at=timezone.now() - timedelta(
            seconds=settings.AIW_IDEMPOTENCY_LOCK_SECONDS + 1))
    assert json.loads(_post(agent_client).content)["runs"] == 2


def test_an_expired_key_runs_the_request_again(agent_client):
    _post(agent_client)
    IdempotencyKey.objects.update(expires_at=timezone.now())
    assert json.loads(_post(agent_client).content)["runs"] == 2


def test_a_server_error_is_not_stored_so_a_retry_runs_again(users):
    client = Client(raise_request_exception=False)
    client.force_login(users["agent"])
    failed = _post(client, path="/probe/flaky")
    retried = _post(client, path="/probe/flaky")
    assert failed.status_code == 500 and failed["Content-Type"] == "application/problem+json"
    assert retried.status_code == 201 and retried.json()["calls"] == 2
    assert IdempotencyKey.objects.get().status == 201


def test_an_invalid_key_is_a_400_problem(agent_client):
    for bad in ["", "x" * 256, "naïve"]:
        response = _post(agent_client, headers={"Idempotency-Key": bad})
        assert response.status_code == 400, bad
    assert CountingView.runs == 0


def test_requests_without_a_key_run_every_time(agent_client):
    _post(agent_client, headers={})
    _post(agent_client, headers={})
    assert CountingView.runs == 2 and not IdempotencyKey.objects.exists()


def test_token_and_session_callers_are_told_apart_before_the_view_runs(
    client, agent_token, users
):
    token_first = _post(client, headers=KEY | bearer(agent_token))
    token_again = _post(client, headers=KEY | bearer(agent_token))
    client.force_login(users["agent"])
    session_first = _post(client, headers=KEY)
    assert token_again.content == token_first.content
    assert json.loads(session_first.content)["runs"] == 1  # same user as the token: replayed
    assert IdempotencyKey.objects.get().user == users["agent"]


def test_http_basic_credentials_are_not_accepted(client, users):
    basic = "Basic " + base64.b64encode(b"agent-user:pw").decode()
    assert _post(client, headers=KEY | {"Authorization": basic}).status_code == 401
    assert not IdempotencyKey.objects.exists()


def test_an_unauthenticated_request_is_not_recorded(client):
    assert _post(client).status_code == 401
    assert not IdempotencyKey.objects.exists()


def test_telemetry_ingest_replays_its_first_answer_for_a_retried_key(client, pump, agent_token):
    """GIVEN an agent posting one telemetry event with an Idempotency-Key, WHEN it retries,
    THEN it gets the first answer again (not a 'duplicates: 1' answer from a second run)."""
    body = event(pump, T0, {"Pressure": 1.0})
    headers = bearer(agent_token) | {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/telemetry/ingest", body, content_type="application/json",
                        headers=headers)
    again = client.post("/telemetry/ingest", body, content_type="application/json",
                        headers=headers)
    plain = client.post("/telemetry/ingest", body, content_type="application/json",
                        headers=bearer(agent_token))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and first.json()["accepted"] == 1
    assert plain.json()["duplicates"] == 1
