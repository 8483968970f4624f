"""One error envelope: RFC 9457 problem+json for every API error, HTML pages for browsers."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from aiw.tests import raw

pytestmark = [pytest.mark.django_db, pytest.mark.urls("aiw.tests.urls")]
PROBLEM = "application/problem+json"


@pytest.fixture
def quiet_client() -> Client:
    return Client(raise_request_exception=False)


def test_an_unknown_url_is_a_404_problem_for_api_clients(client):
    response = client.get("/no/such/thing", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert response.json() == {"type": "https://opstwin.dev/problems/404", "title": "Not Found",
                               "status": 404, "detail": "Not Found (404)"}


def test_an_unknown_url_is_an_html_page_for_browsers(client):
    response = client.get("/no/such/thing", headers={"Accept": "text/html,*/*"})
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_wrong_method_is_a_405_problem_with_allow(viewer_client):
    response = viewer_client.post("/diff")
    assert response.status_code == 405 and response["Content-Type"] == PROBLEM
    assert "GET" in response["Allow"]


def test_a_crash_in_a_plain_view_is_a_500_problem(quiet_client):
    response = quiet_client.get("/probe/crash", headers={"Accept": "application/json"})
    assert response.status_code == 500 and response["Content-Type"] == PROBLEM
    assert "a bug" not in response.content.decode()  # no internals leak


def test_a_missing_object_in_an_api_view_is_a_404_problem(viewer_client):
    response = viewer_client.get("/probe/boom")
    assert response.status_code == 404 and response.json()["title"] == "Not found."


def test_a_disallowed_host_is_a_400_problem(quiet_client):
    response = quiet_client.get("/diff", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM


def test_an_anonymous_api_call_is_a_401_problem(client):
    response = client.get("/snapshot")
    assert response.status_code == 401 and response["Content-Type"] == PROBLEM


def test_an_outsider_gets_403_problems_from_permission_checks(outsider_client, twin):
    response = outsider_client.post("/telemetry/ingest", b"{}", content_type="application/json")
    assert response.status_code == 403 and response["Content-Type"] == PROBLEM


@pytest.mark.django_db(transaction=True)
def test_the_live_server_answers_unknown_urls_with_problems(aiw_server):
    status, headers, body = raw.get(aiw_server, "/nope", {"Accept": "application/json"})
    assert status == 404 and headers["content-type"] == PROBLEM
    assert json.loads(body)["status"] == 404
