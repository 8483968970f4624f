"""Webhook retries on a real Celery worker through the real Redis broker: the retry is
re-queued with its backoff countdown (not run inline as eager Celery does), and a delivery
whose queueing failed is queued again by the sweep."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from opstwin_site.celery import app as celery_app
from policy import notifications
from policy.choices import DeliveryStatus
from policy.models import NotificationDelivery, NotificationSubscription
from policy.tests.receiver import Receiver
from telemetry.models import Anomaly

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "receiver-shared-secret-0123456789"


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def webhook_subscriber(users, receiver, settings):
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the local Receiver
    NotificationSubscription.objects.create(user=users["supervisor"], email=False,
                                            webhook_url=receiver.url, webhook_secret=SECRET)
    return users["supervisor"]


def critical(pump) -> Anomaly:
    now = timezone.now()
    return Anomaly.objects.create(asset=pump, metric="Pressure", detector="ewma", kind="spike",
                                  severity="critical", score=0.99, started_at=now,
                                  last_seen_at=now)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_worker_retries_a_500_after_its_backoff_and_then_delivers(
        redis_url, settings, pump, webhook_subscriber, receiver):
    """GIVEN a receiver answering 500 twice, then 200, and a 0.2 s backoff; WHEN an escalation
    is notified through a worker on Redis; THEN the receiver gets three signed requests, the
    later ones each at least their backoff after the one before, and the delivery ends
    delivered after three attempts."""
    from policy.alerts import escalation_message

    settings.NOTIFY_BACKOFF_SECONDS, settings.NOTIFY_MAX_RETRIES = 0.2, 5
    receiver.answers = [500, 500]
    celery_app.conf.update(broker_url=redis_url, task_always_eager=False)
    try:
        with start_worker(celery_app, queues=["actions"], perform_ping_check=False,
                          pool="solo", loglevel="WARNING"):
            notifications.notify(escalation_message(critical(pump)))
            wait_for(lambda: NotificationDelivery.objects.filter(
                status=DeliveryStatus.DELIVERED).exists())
    finally:
        celery_app.conf.update(broker_url="memory://")
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 3)
    assert [r.signature_ok for r in receiver.requests] == [True, True, True]
    stamps = [r.at for r in receiver.requests]
    assert stamps[1] - stamps[0] >= 0.2 and stamps[2] - stamps[1] >= 0.4  # countdowns, not speed


def test_a_delivery_never_queued_is_queued_by_the_sweep(
        settings, pump, webhook_subscriber, receiver):
    """GIVEN a delivery left pending with no attempt (its queueing failed); WHEN the sweep runs
    after the delay; THEN it is sent, and a second sweep finds nothing more to do."""
    from policy.alerts import escalation_message

    celery_app.conf.update(task_always_eager=False, broker_url="memory://")
    try:  # queueing into the in-memory broker: nothing runs, the delivery stays pending
        notifications.notify(escalation_message(critical(pump)))
    finally:
        celery_app.conf.update(task_always_eager=True)
    assert NotificationDelivery.objects.get().status == DeliveryStatus.PENDING
    assert notifications.requeue_unsent(600) == 0  # too recent: its task may still come

    later = timezone.now() + timedelta(seconds=601)
    assert notifications.requeue_unsent(600, now=later) == 1
    assert NotificationDelivery.objects.get().status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1
    assert notifications.requeue_unsent(600, now=later) == 0
