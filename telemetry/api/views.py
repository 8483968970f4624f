"""Telemetry HTTP API: ingest."""

from __future__ import annotations

import json

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from telemetry.api.serializers import IngestResultSerializer
from telemetry.choices import IngestSource
from telemetry.services import RawPayload, ingest_batch
from telemetry.validation import InvalidEvent, decode_json
from twins.problems import PROBLEMS_EXTENSION, problem
from twins.schemas import load_schema
from twins.scoping import refusal_of_user, twins_where

#: Ingest writes where ``twins.scoping.may(user, INGEST_PERMISSION, twin)`` holds.
INGEST_PERMISSION = "telemetry.add_telemetrysample"


class RawBodyParser(BaseParser):
    """Hands the body over unparsed; the view splits JSON, JSON arrays and NDJSON itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        from django.conf import settings

        # Never buffer more than the limit (+1 byte, so the view can tell it was exceeded).
        return stream.read(settings.INGEST_MAX_BODY_BYTES + 1)


def split_body(body: bytes, content_type: str) -> list[RawPayload]:
    """One event, a JSON array of events, or NDJSON (one event per line) → payload list.

    Raises ``InvalidEvent`` when the body as a whole is not JSON (or not NDJSON).
    """
    if "ndjson" in content_type or "jsonlines" in content_type:
        return [RawPayload(body=line) for line in body.splitlines() if line.strip()]
    doc = decode_json(body)
    items = doc if isinstance(doc, list) else [doc]
    return [RawPayload(body=item if isinstance(item, dict) else json.dumps(item)) for item in items]


def _event_schema() -> dict:
    """telemetry.v1 without its JSON Schema keywords that OpenAPI 3.0 lacks ($schema, $id)."""
    return {k: v for k, v in load_schema("telemetry.v1").items() if not k.startswith("$")}


#: The JSON body: one telemetry.v1 event or a non-empty array of them.
INGEST_BODY = {"oneOf": [_event_schema(),
                         {"type": "array", "minItems": 1, "items": _event_schema()}]}


class IngestView(APIView):
    """POST /telemetry/ingest: telemetry.v1 events over HTTP.

    201 when every event was accepted (or was a known duplicate). 400 with a problem body
    listing each rejected event by index and reason otherwise; the valid events of the same
    request are stored, and a retry is harmless because ``event_id`` de-duplicates. 413 when
    the body exceeds ``INGEST_MAX_BODY_BYTES`` (default 5 MiB; the server reads no further).
    The status reflects validation and storage only: detection runs after commit, isolated
    per asset, and its failures are recorded on the asset (``GET /telemetry/ingest/status``).
    """

    parser_classes = [RawBodyParser]

    @extend_schema(
        request={"application/json": INGEST_BODY, "application/x-ndjson": str},
        responses={201: IngestResultSerializer},
        extensions={PROBLEMS_EXTENSION: [413]},
        examples=[OpenApiExample("one event", request_only=True, description=(
            "Names the SKAB demo's twin and asset: elsewhere, use a twin and asset the "
            "caller may operate, and metrics the asset declares."), value={
            "event_id": "7b0e8f1e-2a47-4c53-9f7e-5d0f3f1b2c11", "twin_id": "skab",
            "asset_id": "valve1-0", "ts": "2020-03-09T10:14:33Z",
            "metrics": {"Pressure": 0.05, "Current": 1.33},
        })],
    )
    def post(self, request):
        from django.conf import settings

        reason = refusal_of_user(request.user, INGEST_PERMISSION)
        if reason:
            raise PermissionDenied(f"ingest: {reason}")
        body = request.data
        if not isinstance(body, bytes) or not body.strip():  # DRF hands an empty body over as {}
            return problem(400, "Invalid telemetry", "the body is empty: send one telemetry.v1 "
                           "event, a JSON array of events, or NDJSON")
        if len(body) > settings.INGEST_MAX_BODY_BYTES:
            return problem(413, "Body too large",
                           f"at most {settings.INGEST_MAX_BODY_BYTES} bytes per request")
        try:
            payloads = split_body(body, request.content_type or "")
        except InvalidEvent as exc:
            return problem(400, "Invalid telemetry", str(exc))
        if not payloads:
            return problem(400, "Invalid telemetry", "no events: the array or NDJSON is empty")
        twins = set(twins_where(request.user, INGEST_PERMISSION).values_list("slug", flat=True))
        report = ingest_batch(payloads, source=IngestSource.HTTP, twins=twins)
        result = {"accepted": report.accepted, "duplicates": report.duplicates,
                  "samples": report.samples,
                  "rejected": [{"index": i, "reason": r} for i, r in report.rejected]}
        if report.rejected:
            return problem(400, "Invalid telemetry",
                           f"{len(report.rejected)} of {len(payloads)} events rejected", **result)
        return Response(result, status=status.HTTP_201_CREATED)
