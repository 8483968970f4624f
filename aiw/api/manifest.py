"""The AIW manifest: everything an agent that knows only this URL needs to use the service."""

from __future__ import annotations

import hashlib
import json
from functools import cache

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiw.api.serializers import ManifestSerializer
from aiw.models import AgentToken
from twins.schemas import CATALOGUE_SCHEMA, PROBLEM_SCHEMA, RESOURCE_SCHEMAS, schema_names
from twins.scoping import operable_twins, visible_twins

AIW_VERSION = "1.0"
DIFF_DEFAULT_LIMIT, DIFF_MAX_LIMIT = 100, 1000
ENDPOINTS = {  # name in the manifest → (URL name, args)
    "manifest": ("aiw-manifest", []), "schemas": ("aiw-schemas", []),
    "diff": ("aiw-diff", []), "snapshot": ("aiw-snapshot", []),
    "subscribe": ("aiw-subscribe", []), "openapi": ("openapi-schema", []),
    "docs": ("api-docs", []), "telemetry_ingest": ("telemetry-ingest", []),
    "proposals": ("proposal-list", []), "actions": ("aiw-actions", []),
    "twins": ("twin-list", []), "asset_types": ("asset-type-list", []),
    "assets": ("asset-list", []),
}
WS_CLOSE_CODES = {"4401": "not authenticated", "4403": "token lacks the read scope",
                  "4410": "cursor expired or unknown: resync from /snapshot",
                  "4429": "rate limit or too many streams", "4408": "too slow: resume from cursor"}


def _endpoints(request: Request) -> dict[str, str]:
    from aiw.api.views import public_url

    found = {}
    for name, (url_name, args) in ENDPOINTS.items():
        try:
            found[name] = public_url(request, reverse(url_name, args=args))
        except NoReverseMatch:  # an app without that route: leave it out, do not fail
            continue
    base = public_url(request, "/")
    websocket = "wss" + base[5:] if base.startswith("https:") else "ws" + base[4:]
    found["websocket"] = websocket + "ws/feed"
    found["schema"] = public_url(request, "/schemas/") + "{name}"
    if "assets" in found:
        found["asset_state"] = found["assets"] + "/{id}/state"
    return found


def _twin_model(endpoints: dict, schemas: dict) -> dict:
    """Where the twin model lives and how to write it (issue 14): resources with their
    schemas, optimistic concurrency, and the asset state with its feed event."""
    return {
        "resources": {
            name: {"url": endpoints.get(url), "schema": schemas[schema]}
            for name, url, schema in (("twin", "twins", "twin.v1"),
                                      ("asset_type", "asset_types", "asset-type.v1"),
                                      ("asset", "assets", "asset.v1"))},
        "concurrency": {"etag": "the resource's revision, e.g. \"3\"",
                        "if_match": "required on PUT, PATCH and DELETE: 428 when missing, "
                                    "412 when stale; * matches any revision",
                        "if_none_match": "304 when the ETag is current"},
        "hierarchy": "an asset's parent is an asset of the same twin (site, line, machine); "
                     "grants on a twin apply to all its assets",
        "state": {"url": endpoints.get("asset_state"), "schema": schemas["asset-state.v1"],
                  "past": "?at=<ISO 8601 with offset>",
                  "feed_event": "asset.state",
                  "coalesced_seconds": settings.ASSET_STATE_MIN_INTERVAL_SECONDS,
                  "silent_after_intervals": settings.ASSET_SILENT_AFTER_INTERVALS},
    }


@cache
def operations() -> tuple[dict, ...]:
    """Every HTTP operation of the API (method, path, operationId, summary), from the OpenAPI
    document, computed once per process."""
    from drf_spectacular.generators import SchemaGenerator

    document = SchemaGenerator().get_schema(request=None, public=True)
    return tuple(
        {"method": method.upper(), "path": path, "operation_id": op.get("operationId"),
         "summary": op.get("summary") or (op.get("description") or "").split("\n")[0]}
        for path, item in document["paths"].items() for method, op in item.items()
    )


def _caller_twins(user) -> dict[str, list[str]]:
    if not user.is_authenticated:
        return {"view": [], "operate": []}
    view = ["*"] if user.has_perm("twins.view_twin") else \
        sorted(visible_twins(user).values_list("slug", flat=True))
    operate = ["*"] if user.has_perm("twins.operate_twin") else \
        sorted(operable_twins(user).values_list("slug", flat=True))
    return {"view": view, "operate": operate}


def _token(token) -> dict | None:
    if not isinstance(token, AgentToken):
        return None
    return {"name": token.name, "prefix": token.prefix, "scopes": token.scopes,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "rate": token.rate or settings.AIW_TOKEN_RATE}


def _auth_kind(request: Request) -> str | None:
    if isinstance(request.auth, AgentToken):
        return "token"
    if not request.user.is_authenticated:
        return None
    return "basic" if request.headers.get("Authorization", "").lower().startswith("basic") \
        else "session"


def caller(request: Request) -> dict:
    """The caller's identity, role, token, permissions and twins."""
    from twins.roles import role_of

    user = request.user
    signed_in = user.is_authenticated
    return {
        "authenticated": signed_in,
        "username": user.get_username() if signed_in else None,
        "role": (role_of(user) or None) if signed_in else None,
        "auth": _auth_kind(request), "token": _token(request.auth),
        "permissions": sorted(user.get_all_permissions()) if signed_in else [],
        "twins": _caller_twins(user),
    }


def _limits() -> dict:
    return {
        "diff_default_limit": DIFF_DEFAULT_LIMIT, "diff_max_limit": DIFF_MAX_LIMIT,
        "streams_per_caller": settings.AIW_MAX_STREAMS_PER_CALLER,
        "stream_queue_events": settings.AIW_STREAM_QUEUE_MAX,
        "token_rate": settings.AIW_TOKEN_RATE,
    }


def _streams(endpoints: dict) -> dict:
    return {
        "sse": {"url": endpoints.get("subscribe"), "resume": "Last-Event-ID header or ?since=",
                "filters": ["types", "twin"], "id": "cursor", "event": "change event type",
                "heartbeat_seconds": settings.AIW_SSE_HEARTBEAT_SECONDS,
                "control_events": ["aiw.reconnect", "aiw.error"],
                "control_schema": "stream-control.v1"},
        "websocket": {"url": endpoints["websocket"], "resume": "?since=",
                      "filters": ["types", "twin"], "close_codes": WS_CLOSE_CODES},
    }


def _actions(request: Request, endpoints: dict, schemas: dict) -> dict:
    """The action catalogue for this caller (action-catalogue.v1) and where to use it."""
    from policy.catalogue import catalogue_document

    return {"url": endpoints.get("actions"), "schema": schemas[CATALOGUE_SCHEMA],
            "propose": endpoints.get("proposals"),
            **catalogue_document(visible_twins(request.user))}


def manifest_body(request: Request) -> dict:
    """The manifest document for this caller (see ManifestSerializer)."""
    from aiw.api.views import schema_url

    endpoints = _endpoints(request)
    schemas = {n: schema_url(request, n) for n in schema_names()}
    return {
        "service": "OpsTwin", "version": settings.SPECTACULAR_SETTINGS["VERSION"],
        "aiw_version": AIW_VERSION, "endpoints": endpoints, "operations": list(operations()),
        "schemas": schemas,
        "resources": RESOURCE_SCHEMAS,
        "actions": _actions(request, endpoints, schemas),
        "twin_model": _twin_model(endpoints, schemas),
        "auth": [
            {"type": "bearer", "header": "Authorization: Bearer <token>",
             "obtain": "Django admin > Agent tokens, or `manage.py agent_token create`"},
            {"type": "session", "header": "Cookie: sessionid=... (+ X-CSRFToken on writes)"},
        ],
        "limits": _limits(),
        "cursor": {"format": "opaque", "start": "0", "expired_or_unknown": 410,
                   "resync": endpoints["snapshot"]},
        "streams": _streams(endpoints),
        "idempotency": {"header": "Idempotency-Key", "methods": ["POST", "PUT", "PATCH",
                                                                 "DELETE"],
                        "ttl_hours": settings.AIW_IDEMPOTENCY_TTL_HOURS,
                        "replayed_header": "Idempotent-Replayed"},
        "errors": {"content_type": "application/problem+json", "standard": "RFC 9457",
                   "schema": schemas[PROBLEM_SCHEMA],
                   "members": {"errors": "400: invalid fields, by name",
                               "resync": "410: where to take a snapshot"}},
        "caller": caller(request),
    }


class JSONWhateverAccepted(BaseContentNegotiation):
    """Content negotiation that ignores ``Accept``: the view's first renderer and parser, so a
    browser (``text/html``), an XML-only client or an empty header all get the JSON document
    rather than DRF's browsable page or a 406 (the pattern of DRF's docs, "Custom content
    negotiation")."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ManifestView(APIView):
    """GET /.well-known/aiw-manifest.json with an ETag (304 on ``If-None-Match``)."""

    permission_classes = [AllowAny]
    # A file name ending in .json answers JSON whatever the Accept header (no browsable page).
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONWhateverAccepted

    @extend_schema(operation_id="manifest_retrieve",
                   responses={200: ManifestSerializer, 304: OpenApiResponse(description="")},
                   description="Discovery: endpoints, schemas, auth, limits and the caller's "
                               "own permissions. Private: the caller part differs per caller.")
    def get(self, request: Request) -> Response:
        body = manifest_body(request)
        content = json.dumps(body, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60",
                   "Vary": "Authorization, Cookie"}
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers=headers)
        return Response(body, headers=headers)
