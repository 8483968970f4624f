"""Fixtures of the simulation tests: cheap passwords, a real Celery worker on Redis."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from opstwin_site.celery import app as celery_app


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def worker(redis_url):
    """An in-process Celery worker (solo pool, its own thread) consuming the ``simulate`` queue
    through the real Redis broker; eager mode is off while it runs (as in tests/test_celery)."""
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False)
    try:
        with start_worker(celery_app, queues=["simulate"], perform_ping_check=False,
                          pool="solo", loglevel="WARNING"):
            yield
    finally:
        celery_app.conf.update(broker_url="memory://")
