"""Request ids: the response header, JSON log lines stamped with the id, and Celery tasks that
carry it (a real Redis broker for the publish side)."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from kombu import Queue

from opstwin_site.celery import app as celery_app
from opstwin_site.request_log import (
    JsonFormatter,
    RequestIdFilter,
    incoming_id,
    request_id,
)


@pytest.mark.parametrize("given, kept", [
    ("abc-123_x.y", True),
    ("a" * 64, True),
    ("a" * 65, False),
    ("has space", False),
    ("<script>", False),
    ("", False),
])
def test_an_incoming_id_is_kept_only_when_plausible(given, kept):
    result = incoming_id(given)
    assert (result == given) is kept
    if not kept:
        assert len(result) == 32 and int(result, 16) >= 0


def test_every_response_carries_its_request_id(client):
    generated = client.get("/health")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/health")["X-Request-ID"] != generated
    assert client.get("/health", HTTP_X_REQUEST_ID="trace-42")["X-Request-ID"] == "trace-42"


@pytest.fixture
def json_log():
    """The django.request logger also writes JSON lines, with the request-id filter, here."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_log_lines_of_a_request_are_json_with_its_id(client, json_log):
    """GIVEN a request for a page that does not exist, with X-Request-ID: trace-404
    THEN Django's "Not Found" warning is one JSON line carrying that id."""
    client.get(f"/missing-{uuid.uuid4().hex}", HTTP_X_REQUEST_ID="trace-404")
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "trace-404"
    assert line["level"] == "WARNING" and line["logger"] == "django.request"
    assert line["message"].startswith("Not Found: /missing-")
    assert line["status_code"] == 404  # an extra= field of Django's log call
    assert line["ts"].endswith("+00:00")


def test_records_outside_a_request_have_a_dash():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_task_published_during_a_request_carries_its_id(redis_url):
    """GIVEN the request id "trace-task" is current
    WHEN a task is sent to the real Redis broker
    THEN its message has the id in a request_id header."""
    queue = Queue(f"request-id-test-{uuid.uuid4().hex[:8]}")
    token = request_id.set("trace-task")
    # The broker named explicitly: other tests may leave the app on its in-memory transport.
    try:
        with celery_app.connection_for_write(redis_url) as conn:
            celery_app.send_task("opstwin.no_such_task", queue=queue.name, declare=[queue],
                                 connection=conn)
    finally:
        request_id.reset(token)
    with celery_app.connection_for_read(redis_url) as conn:
        simple = conn.SimpleQueue(queue)
        try:
            message = simple.get(timeout=10)
            assert message.headers["request_id"] == "trace-task"
            message.ack()
        finally:
            simple.close()
            queue(conn.default_channel).delete()


def test_a_task_runs_with_the_id_it_carries():
    """A task executed with a request_id header sees it as the current id, and the id is
    restored afterwards."""
    seen = []

    @celery_app.task(name=f"tests.request_id_probe_{uuid.uuid4().hex[:6]}")
    def probe():
        seen.append(request_id.get())

    probe.apply(headers={"request_id": "trace-run"})
    probe.apply()
    assert seen == ["trace-run", "-"]
    assert request_id.get() == "-"


@pytest.mark.django_db
def test_an_audit_entry_written_by_a_task_names_the_request_that_queued_it():
    """A task carrying a request id (as one queued during a request does) writes audit entries
    under that id; outside any request or task the entry's id is empty."""
    from django.db import transaction

    from twins.ledger import record_change
    from twins.models import AuditEntry, Twin

    twin = Twin.objects.create(slug="plant", name="Plant")

    @celery_app.task(name=f"tests.request_id_audit_{uuid.uuid4().hex[:6]}")
    def change(name: str):
        with transaction.atomic():
            record_change(actor="worker", action="twin.touch", resource_type="twin",
                          resource_id=twin.pk, operation="updated", after={"name": name},
                          twin=twin)

    change.apply(args=["by-task"], headers={"request_id": "trace-audit"})
    change.apply(args=["no-request"])
    assert dict(AuditEntry.objects.values_list("after__name", "request_id")) == {
        "by-task": "trace-audit", "no-request": ""}


@pytest.mark.django_db
def test_an_audit_entry_written_during_a_request_names_its_id(admin_client):
    """The admin edits a twin with an X-Request-ID: the audit entry carries that id."""
    from twins.models import AuditEntry

    admin_client.post("/admin/twins/twin/add/", {
        "slug": "mill", "name": "Mill", "description": "", "assets-TOTAL_FORMS": "0",
        "assets-INITIAL_FORMS": "0", "assets-MIN_NUM_FORMS": "0",
        "assets-MAX_NUM_FORMS": "1000"}, headers={"X-Request-ID": "trace-admin-1"})
    assert AuditEntry.objects.get(action="twin.create").request_id == "trace-admin-1"
