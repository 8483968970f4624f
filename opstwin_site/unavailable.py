"""503 problems while a dependency is down, instead of 500s.

A view that fails because PostgreSQL or Redis cannot be reached is not a bug of the request:
the client should retry later. ``DependencyUnavailableMiddleware`` turns those exceptions
into ``503 application/problem+json`` with ``Retry-After`` and the missing dependency::

    {"type": ".../problems/503", "title": "Service Unavailable", "status": 503,
     "detail": "database unavailable: ...", "dependency": "database"}

Recognised: ``django.db.OperationalError`` and ``InterfaceError`` (connection refused, reset,
pool timeout: psycopg and psycopg_pool raise these), redis-py's ``ConnectionError`` and
``TimeoutError`` (rate-limit cache, channel layer) and kombu's ``OperationalError`` (Celery
publishing a task). Anything else keeps its 500. ``/ready`` says the same per dependency.
"""

from __future__ import annotations

import logging

import redis
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from kombu.exceptions import OperationalError as KombuOperationalError

from twins.problems import problem

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


def dependency_of(exc: BaseException) -> str | None:
    """``"database"``, ``"redis"``, ``"broker"`` when ``exc`` means that service is
    unreachable, else None."""
    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "redis"
    if isinstance(exc, KombuOperationalError):
        return "broker"
    return None


class DependencyUnavailableMiddleware:
    """Maps a view's "dependency unreachable" exception to a 503 problem (see module doc)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        dependency = dependency_of(exc)
        if dependency is None:
            return None
        logger.warning(
            "%s unavailable during %s %s: %s", dependency, request.method, request.path, exc
        )
        return problem(
            503,
            "Service Unavailable",
            f"{dependency} unavailable: {type(exc).__name__}: {exc}"[:300],
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            dependency=dependency,
        )
