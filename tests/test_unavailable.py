"""A view that fails because a dependency is unreachable answers 503 problem+json naming it
(``opstwin_site.unavailable``); other failures keep their 500.
``benchmarks/faults.py`` shows it on a live server with PostgreSQL cut off."""

from __future__ import annotations

import json

import pytest
import redis
from django.db import OperationalError
from django.test import RequestFactory
from kombu.exceptions import OperationalError as KombuOperationalError

from opstwin_site.unavailable import DependencyUnavailableMiddleware


def answer(exc: Exception):
    middleware = DependencyUnavailableMiddleware(lambda request: None)
    return middleware.process_exception(RequestFactory().get("/telemetry/latest"), exc)


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (OperationalError("connection refused"), "database"),
        (redis.ConnectionError("Error 111 connecting"), "redis"),
        (KombuOperationalError("broker down"), "broker"),
    ],
)
def test_an_unreachable_dependency_is_a_503_problem_naming_it(exc, dependency):
    response = answer(exc)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == "5"
    body = json.loads(response.content)
    assert body["dependency"] == dependency
    assert body["detail"].startswith(f"{dependency} unavailable: ")


def test_any_other_failure_is_left_to_the_500_handler():
    assert answer(RuntimeError("a bug")) is None


def test_the_middleware_is_installed(settings):
    assert "opstwin_site.unavailable.DependencyUnavailableMiddleware" in settings.MIDDLEWARE
