"""AIW protocol endpoints: manifest, schemas, delta sync (/diff) and snapshot."""

from __future__ import annotations

import hashlib
import json

from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from aiw.api.serializers import ChangeEventSerializer
from aiw.feed import InvalidCursor, decode_cursor, encode_cursor, events_after
from aiw.models import ChangeEvent
from aiw.problems import problem
from aiw.schemas import load_schema, schema_names
from twins.scoping import visible_twins

AIW_VERSION = "1.0"
DIFF_DEFAULT_LIMIT, DIFF_MAX_LIMIT = 100, 1000


def feed_queryset(user, *, types: list[str] | None = None, twin: str | None = None):
    """Change events ``user`` may see: those of visible twins (and twin-less ones)."""
    queryset = ChangeEvent.objects.select_related("twin").filter(
        Q(twin__isnull=True) | Q(twin__in=visible_twins(user))
    )
    if types:
        queryset = queryset.filter(Q(type__in=types) | Q(resource_type__in=types))
    if twin:
        queryset = queryset.filter(twin__slug=twin)
    return queryset


def _endpoints(request) -> dict:
    def url(name: str) -> str:
        return request.build_absolute_uri(reverse(name))

    return {
        "manifest": url("aiw-manifest"), "schemas": url("aiw-schemas"), "diff": url("aiw-diff"),
        "snapshot": url("aiw-snapshot"), "openapi": url("openapi-schema"),
        "docs": url("api-docs"), "telemetry_ingest": url("telemetry-ingest"),
        "proposals": url("proposal-list"), "websocket": "/ws/feed",
    }


def manifest(request) -> HttpResponse:
    """GET /.well-known/aiw-manifest.json: everything an agent needs to discover the service."""
    user = request.user
    body = {
        "service": "OpsTwin", "version": "0.1.0", "aiw_version": AIW_VERSION,
        "endpoints": _endpoints(request),
        "schemas": {n: request.build_absolute_uri(reverse("aiw-schema", args=[n]))
                    for n in schema_names()},
        "auth": ["session", "basic"],
        "limits": {"diff_max_limit": DIFF_MAX_LIMIT, "diff_default_limit": DIFF_DEFAULT_LIMIT},
        "cursor": {"format": "opaque", "start": "0"},
        "caller": {
            "authenticated": user.is_authenticated,
            "username": user.get_username() if user.is_authenticated else None,
            "permissions": sorted(user.get_all_permissions()) if user.is_authenticated else [],
        },
    }
    content = json.dumps(body, sort_keys=True).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponse(status=304, headers={"ETag": etag})
    response = HttpResponse(content, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=60"
    return response


def schema_index(request) -> JsonResponse:
    """GET /schemas: the names and URLs of every JSON Schema."""
    return JsonResponse({"schemas": [
        {"name": n, "url": request.build_absolute_uri(reverse("aiw-schema", args=[n]))}
        for n in schema_names()
    ]})


def schema_detail(request, name: str) -> HttpResponse:
    """GET /schemas/{name}: one schema document, or a 404 problem."""
    try:
        return JsonResponse(load_schema(name), content_type="application/schema+json")
    except KeyError:
        return problem(404, "Unknown schema", f"no schema named {name!r}",
                       known=schema_names())


class DiffQuery(serializers.Serializer):
    since = serializers.CharField(required=False, allow_blank=True, default="0")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=DIFF_MAX_LIMIT,
                                     default=DIFF_DEFAULT_LIMIT)
    types = serializers.CharField(required=False, allow_blank=True, default="")
    twin = serializers.SlugField(required=False, default="")


class DiffPage(serializers.Serializer):
    events = ChangeEventSerializer(many=True)
    next_cursor = serializers.CharField()
    has_more = serializers.BooleanField()


class DiffView(APIView):
    """Delta sync: the events after a cursor, in commit order, with the cursor to continue."""

    @extend_schema(parameters=[DiffQuery], responses=DiffPage,
                   description="Events after `since` in commit order. 410 for an unknown cursor.")
    def get(self, request):
        query = DiffQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        try:
            after = decode_cursor(params["since"])
        except InvalidCursor as exc:
            return problem(410, "Cursor expired or unknown", str(exc),
                           resync=request.build_absolute_uri(reverse("aiw-snapshot")))
        types = [t for t in params["types"].split(",") if t]
        queryset = feed_queryset(request.user, types=types, twin=params["twin"] or None)
        events = events_after(after, queryset, params["limit"] + 1)
        has_more = len(events) > params["limit"]
        events = events[: params["limit"]]
        next_cursor = encode_cursor(events[-1].id) if events else params["since"] or "0"
        return Response({"events": ChangeEventSerializer(events, many=True).data,
                         "next_cursor": next_cursor, "has_more": has_more})


class SnapshotView(APIView):
    """Current state of everything the caller may see, plus the cursor to follow /diff from."""

    @extend_schema(responses=dict)
    def get(self, request):
        from policy.api.serializers import ProposalSerializer
        from policy.models import Proposal
        from telemetry.api.serializers import AnomalySerializer
        from telemetry.models import Anomaly
        from twins.api.serializers import AssetSerializer, TwinSerializer
        from twins.models import Asset

        newest = ChangeEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        twins = visible_twins(request.user)
        return Response({
            "cursor": encode_cursor(newest) if newest else "0",
            "twins": TwinSerializer(twins, many=True).data,
            "assets": AssetSerializer(Asset.objects.filter(twin__in=twins)
                                      .select_related("twin"), many=True).data,
            "open_anomalies": AnomalySerializer(
                Anomaly.objects.filter(asset__twin__in=twins, status="open")
                .select_related("asset__twin"), many=True).data,
            "proposals": ProposalSerializer(
                Proposal.objects.filter(twin__in=twins).select_related("twin", "asset")
                .exclude(status__in=["rejected", "executed", "verified", "rolled_back"]),
                many=True).data,
        })

