"""Helpers shared by the twin model's tests: JSON calls with revision headers, the served
schemas, the feed, and telemetry payloads through the real ingest service."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from django.test import Client, TestCase

from aiw.tests.test_contract_states import Served
from telemetry.services import IngestReport, RawPayload, ingest_batch
from twins.models import Asset


def tag(revision: int) -> str:
    """The ETag the API gives revision ``revision``."""
    return f'"{revision}"'


def send(client: Client, method: str, path: str, body: dict | None = None, *,
         if_match: str | int | None = None, **headers):
    """A JSON request; ``if_match`` an int (a revision) or a raw header value."""
    if if_match is not None:
        headers["If-Match"] = tag(if_match) if isinstance(if_match, int) else if_match
    call = getattr(client, method)
    with TestCase.captureOnCommitCallbacks(execute=True):
        if method in ("get", "head"):
            return call(path, body or {}, headers=headers)
        return call(path, json.dumps(body) if body is not None else "",
                    content_type="application/json", headers=headers)


def feed(client: Client, **params) -> list[dict]:
    """Every event on ``/diff`` the caller may see, oldest first."""
    page = client.get("/diff", {"since": "0", "limit": "1000", **params}).json()
    assert not page["has_more"]
    return page["events"]


def served_schemas() -> Served:
    """The schemas as an agent reads them from ``/schemas`` (fetched over the test client)."""
    return Served(Client())


def problem(served: Served, response, status: int) -> dict:
    """The problem+json body of ``response``, checked against the served problem.v1."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/problem+json")
    return served.response(response, "problem.v1", status)


def reading(asset: Asset, ts: datetime, metrics: dict, **extra) -> RawPayload:
    """A telemetry.v1 payload for ``asset`` at sensor time ``ts``."""
    return RawPayload(body={"event_id": str(uuid.uuid4()), "twin_id": asset.twin.slug,
                            "asset_id": asset.slug, "ts": ts.isoformat(),
                            "metrics": metrics} | extra)


def ingest(*payloads: RawPayload) -> IngestReport:
    """One batch through ``telemetry.services.ingest_batch`` (its after-commit detection is
    not what these tests are about: inside the test's transaction it never runs)."""
    return ingest_batch(list(payloads), source="replay")
