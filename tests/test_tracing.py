"""Optional OpenTelemetry tracing (``opstwin_site.tracing``): off by default; with
``TRACING_ENABLED=1`` a request produces a server span, its psycopg queries child spans of the
same trace, and a Celery task its own span. Spans are read from the SDK's in-memory exporter
in a child process (instrumenting patches Django and psycopg for the whole process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opstwin_site.tracing import setup_tracing
from tests.test_deploy import REPO, this_database_url

_TRACE_A_REQUEST = """
import json, os
import django
django.setup()
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opstwin_site.tracing import setup_tracing
exporter = InMemorySpanExporter()
assert setup_tracing("test", exporter=exporter, simple=True)
from django.test import Client
status = Client().get("/ready", headers={"X-Request-ID": "trace-me"}).status_code
from aiw.tasks import purge_idempotency_keys
purge_idempotency_keys.apply()
spans = [{"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id,
          "span": s.context.span_id, "parent": s.parent.span_id if s.parent else None,
          "process": s.resource.attributes.get("opstwin.process")}
         for s in exporter.get_finished_spans()]
print(json.dumps({"status": status, "spans": spans}))
"""

_TRACE_THE_ASGI_ENTRY_POINT = """
import asyncio, json
from asgiref.testing import ApplicationCommunicator
from opstwin_site.asgi import application  # sets tracing up as daphne would
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))

async def get(path):
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"host", b"localhost")], "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b""})
    start = await app.receive_output(30)
    await app.receive_output(30)
    return start["status"]

status = asyncio.run(get("/health"))
print(json.dumps({"status": status, "spans": [
    {"name": s.name, "kind": s.kind.name, "process": s.resource.attributes["opstwin.process"]}
    for s in exporter.get_finished_spans()]}))
"""


def traced_run(tmp_path, script: str = _TRACE_A_REQUEST, **extra: str) -> dict:
    env = os.environ | {
        "TRACING_ENABLED": "1",
        "DATABASE_URL": this_database_url(),
        "OPSTWIN_DATA_DIR": str(tmp_path),
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "opstwin_site.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env | extra,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The console exporter (if configured) prints its spans too: take our line.
    (line,) = [x for x in result.stdout.splitlines() if x.startswith('{"status"')]
    return json.loads(line)


@pytest.mark.django_db
def test_a_request_produces_a_server_span_with_its_queries_in_the_same_trace(tmp_path):
    run = traced_run(tmp_path)
    spans = run["spans"]
    (server,) = [s for s in spans if s["kind"] == "SERVER"]
    assert server["name"] == "GET ready"
    assert server["process"] == "test"
    queries = [s for s in spans if s["kind"] == "CLIENT" and s["trace"] == server["trace"]]
    assert queries, spans  # /ready's SELECT 1 and the migrations query, inside the request
    by_id = {s["span"]: s for s in spans}
    for query in queries:
        parent = by_id.get(query["parent"])
        while parent is not None and parent is not server:
            parent = by_id.get(parent["parent"])
        assert parent is server


@pytest.mark.django_db
def test_a_celery_task_produces_its_own_span(tmp_path):
    spans = traced_run(tmp_path)["spans"]
    names = [s["name"] for s in spans]
    assert any("purge_idempotency_keys" in name for name in names), names


def test_the_asgi_entry_point_daphne_serves_is_traced_when_enabled(tmp_path):
    """The instrumentation must be in place before the ASGI handler builds its middleware."""
    run = traced_run(tmp_path, _TRACE_THE_ASGI_ENTRY_POINT, TRACING_EXPORTER="console")
    assert run["status"] == 200
    assert {"name": "GET health", "kind": "SERVER", "process": "web"} in run["spans"]


def test_tracing_is_off_by_default(settings):
    assert settings.TRACING_ENABLED is False
    assert setup_tracing("web") is False
    assert not any("opentelemetry" in m for m in settings.MIDDLEWARE)
