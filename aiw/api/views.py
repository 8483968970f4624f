"""AIW protocol endpoints: schemas, delta sync (/diff) and snapshot. The manifest is in
``aiw.api.manifest``, the SSE stream in ``aiw.sse``."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiw.api.manifest import DIFF_DEFAULT_LIMIT, DIFF_MAX_LIMIT
from aiw.api.serializers import (
    DiffPageSerializer,
    ProblemSerializer,
    SchemaIndexSerializer,
    SnapshotSerializer,
)
from aiw.feed import (
    FeedItem,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    feed_bounds,
    newest_event_id,
    read_events,
)
from telemetry.choices import AnomalyStatus
from twins.feed_scope import FeedFilter, Scope, scope_for
from twins.problems import problem
from twins.schemas import CATALOGUE_SCHEMA, schema_names, served

TERMINAL_PROPOSAL_STATUSES = ["rejected", "executed", "verified", "rolled_back"]


def public_url(request: Request, path: str) -> str:
    """The absolute URL of ``path`` (``/schemas/x``): under ``PUBLIC_URL`` when it is set (a
    proxy in front), else from the request's scheme and Host."""
    if settings.PUBLIC_URL:
        return settings.PUBLIC_URL + path
    return request.build_absolute_uri(path)


def schema_url(request: Request, name: str) -> str:
    """Where schema ``name`` is served; also its ``$id`` there."""
    return public_url(request, reverse("aiw-schema", args=[name]))


class SchemaIndexView(APIView):
    """GET /schemas: the names and URLs of every JSON Schema."""

    permission_classes = [AllowAny]

    @extend_schema(operation_id="schemas_list", responses=SchemaIndexSerializer)
    def get(self, request: Request) -> Response:
        return Response({"schemas": [{"name": n, "url": schema_url(request, n)}
                                     for n in schema_names()]})


class SchemaDetailView(APIView):
    """GET /schemas/{name}: one JSON Schema document whose ``$id`` is the URL it is served at
    (relative ``$ref``s resolve to the neighbouring schemas), or a 404 problem."""

    permission_classes = [AllowAny]

    @extend_schema(operation_id="schema_retrieve", responses={
        (200, "application/schema+json"): OpenApiTypes.OBJECT,
        (404, "application/problem+json"): ProblemSerializer})
    def get(self, request: Request, name: str) -> HttpResponse:
        try:
            document = served(name, schema_url(request, name))
        except KeyError:
            return problem(404, "Unknown schema", f"no schema named {name!r}",
                           known=schema_names())
        response = JsonResponse(document, content_type="application/schema+json")
        response["Cache-Control"] = "public, max-age=300"
        return response


class CatalogueView(APIView):
    """GET /actions: what the caller may propose (action-catalogue.v1)."""

    @extend_schema(operation_id="actions_catalogue", responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description=(
            "action-catalogue.v1 (GET /schemas/action-catalogue.v1): per asset kind, and per "
            "twin the caller may see as its active policy resolves them, each action's "
            "parameters schema (units, bounds), risk level, rollback and guarding "
            "interlocks."))},
        summary="The actions an agent may propose, per asset kind and twin")
    def get(self, request: Request) -> Response:
        from policy.catalogue import catalogue_document
        from twins.scoping import visible_twins

        body = catalogue_document(visible_twins(request.user))
        return Response(body, headers={"Link": f'<{schema_url(request, CATALOGUE_SCHEMA)}>; '
                                               'rel="describedby"'})


class DiffQuery(serializers.Serializer):
    since = serializers.CharField(required=False, allow_blank=True, default="0",
                                  help_text="A cursor from a previous page, event or snapshot; "
                                            "0 = from the beginning.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=DIFF_MAX_LIMIT,
                                     default=DIFF_DEFAULT_LIMIT)
    types = serializers.CharField(required=False, allow_blank=True, default="",
                                  help_text="Comma-separated event types or resource types.")
    twin = serializers.SlugField(required=False, allow_blank=True, default="",
                                 help_text="Only events of this twin.")


def diff_page(after: int, *, newest: int, scope: Scope, where: FeedFilter, limit: int
              ) -> tuple[list[FeedItem], int, bool]:
    """(events, id to continue after, has_more) for one /diff page.

    ``newest`` must be read before the page: every id up to it is then already visible to the
    page query (ids become visible in commit order), so when the page is not full the cursor
    may skip to it even past events the caller cannot see or filtered out.
    """
    items = read_events(after, limit=limit + 1, scope=scope, where=where)
    has_more = len(items) > limit
    items = items[:limit]
    if has_more:
        return items, items[-1].id, True
    return items, max(newest, items[-1].id if items else 0, after), False


def page_json(items: list[FeedItem], next_cursor: str, has_more: bool) -> str:
    """A DiffPage as JSON text, splicing in each event's ready-made JSON."""
    events = ",".join(item.json for item in items)
    tail = json.dumps({"next_cursor": next_cursor, "has_more": has_more}, separators=(",", ":"))
    return f'{{"events":[{events}],{tail[1:]}'


class DiffView(APIView):
    """Delta sync: the events after a cursor, in commit order, with the cursor to continue."""

    @extend_schema(
        parameters=[DiffQuery],
        responses={200: DiffPageSerializer,
                   (410, "application/problem+json"): OpenApiResponse(
                       ProblemSerializer, description="Cursor expired or unknown: resync.")},
        description="Events after `since` in commit order, each once. 410 (problem with "
                    "`resync`) for an expired or unknown cursor.")
    def get(self, request: Request) -> Response:
        query = DiffQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        bounds = feed_bounds()
        try:
            after = decode_cursor(params["since"], bounds)
        except InvalidCursor as exc:
            return problem(410, "Cursor expired or unknown", str(exc), reason=exc.reason,
                           resync=request.build_absolute_uri(reverse("aiw-snapshot")))
        where = FeedFilter.parse(params["types"], params["twin"])
        items, end, has_more = diff_page(after, newest=bounds[0], scope=scope_for(request.user),
                                         where=where, limit=params["limit"])
        return HttpResponse(page_json(items, encode_cursor(end) if end else "0", has_more),
                            content_type="application/json")


def snapshot_state(user) -> dict:
    """The caller's current state and the cursor it corresponds to.

    Read in one REPEATABLE READ, READ ONLY transaction, so the cursor and every row come from
    the same snapshot: following /diff from the cursor yields exactly the later changes.
    (Inside an enclosing transaction, e.g. a test, that transaction's snapshot is used.)
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _state(user, newest_event_id())


def _state(user, newest: int) -> dict:
    from policy.api.serializers import ProposalSerializer
    from policy.models import Proposal
    from telemetry.api.serializers import AnomalySerializer
    from telemetry.models import Anomaly
    from twins.api.serializers import AssetSerializer, TwinSerializer
    from twins.models import Asset
    from twins.scoping import visible_twins
    from twins.state import states_of

    twins = visible_twins(user)
    assets = list(Asset.objects.filter(twin__in=twins).select_related(
        "twin", "asset_type", "parent"))
    return {
        "cursor": encode_cursor(newest) if newest else "0",
        "twins": TwinSerializer(twins, many=True).data,
        "assets": AssetSerializer(assets, many=True).data,
        "asset_states": states_of(assets),
        "open_anomalies": AnomalySerializer(
            Anomaly.objects.filter(asset__twin__in=twins, status=AnomalyStatus.OPEN)
            .select_related("asset__twin"), many=True).data,
        "proposals": ProposalSerializer(
            Proposal.objects.filter(twin__in=twins)
            .select_related("twin", "asset", "proposed_by", "decided_by")
            .exclude(status__in=TERMINAL_PROPOSAL_STATUSES), many=True).data,
    }


class SnapshotView(APIView):
    """Current state of everything the caller may see, plus the cursor to follow /diff from."""

    @extend_schema(responses=SnapshotSerializer,
                   description="Twins, assets, open anomalies and open proposals the caller may "
                               "see, read in one snapshot with the matching feed cursor.")
    def get(self, request: Request) -> Response:
        return Response(snapshot_state(request.user))
