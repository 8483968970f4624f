"""Telemetry HTTP API: reading telemetry back (raw pages, aggregates, latest) and ingest status.

Every endpoint scopes by ``twins.scoping.visible_twins(request.user)`` (through
``telemetry.queries.select_series``): a twin or asset out of scope answers 404, exactly like one
that does not exist. Samples and rollups are read from the read replica when
``DATABASE_REPLICA_URL`` configures one (``telemetry.replica``). Invalid parameters answer 400
problem+json with ``errors`` per field; requests over the limits answer 400 problem+json
titled "Invalid query" with the reason.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from telemetry import queries
from telemetry.api.serializers import (
    AggregateParamsSerializer,
    AggregateResultSerializer,
    IngestStatusSerializer,
    LatestParamsSerializer,
    LatestSerializer,
    QueryParamsSerializer,
    SamplePageSerializer,
)
from telemetry.asset_state import asset_state
from telemetry.detection import detection_failures
from telemetry.ingest_status import merged_lag, read_statuses
from telemetry.replica import from_replica
from twins.models import Asset
from twins.problems import problem
from twins.scoping import get_scoped_or_404, visible_twins

PROBLEMS = {400: OpenApiResponse(description="invalid parameters or over a limit (problem+json)"),
            404: OpenApiResponse(description="twin or asset not found or not visible")}


def _params(serializer_class, request) -> dict:
    """Validated query parameters; 400 naming each invalid one. A parameter given empty
    (``?source=``) is invalid like any value outside its schema: DRF would quietly use the
    field's default instead."""
    serializer = serializer_class(data=request.query_params)
    empty = {name: ["An empty value is not allowed; leave the parameter out instead."]
             for name, values in request.query_params.lists()
             if name in serializer.fields and "" in values}
    if empty:
        raise ValidationError(empty)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _selection(request, params: dict) -> queries.Selection:
    return queries.select_series(request.user, params["twin"], params.get("asset"),
                                 params.get("metric"))


def _invalid(exc: queries.QueryError):
    return problem(400, "Invalid query", str(exc))


class QueryView(APIView):
    """GET /telemetry/query: raw samples of a twin (or one asset, some metrics) in [start, end).

    Ordered by (asset, metric, ts); keyset pagination with the opaque ``next_cursor``. The range
    is limited to ``TELEMETRY_QUERY_MAX_RANGE_DAYS`` and a page to ``TELEMETRY_QUERY_MAX_LIMIT``.
    """

    @extend_schema(parameters=[QueryParamsSerializer],
                   responses={200: SamplePageSerializer, **PROBLEMS})
    def get(self, request):
        params = _params(QueryParamsSerializer, request)
        try:
            selection = _selection(request, params)
            with from_replica():
                page = queries.query_samples(selection, params["start"], params["end"],
                                             limit=params["limit"], cursor=params.get("cursor"))
        except queries.QueryError as exc:
            return _invalid(exc)
        # Bodies are built directly (the serializers document them): per-field serializer
        # calls would dominate the cost of a 10,000-row page.
        return Response({"results": page.rows, "next_cursor": page.next_cursor})


class AggregateView(APIView):
    """GET /telemetry/aggregate: per-bucket avg/min/max/count/sum/stddev/last/p50/p95.

    ``bucket`` is one of ``queries.BUCKETS``; the range is widened to whole buckets. Long ranges
    read the 1-minute/1-hour rollups (``source`` in the answer says which); percentiles and
    sub-minute buckets always read raw samples. ``fill=null`` or ``previous`` returns every
    bucket of the range for every requested series (generate_series).
    """

    @extend_schema(parameters=[AggregateParamsSerializer],
                   responses={200: AggregateResultSerializer, **PROBLEMS})
    def get(self, request):
        params = _params(AggregateParamsSerializer, request)
        try:
            selection = _selection(request, params)
            with from_replica():
                result = queries.aggregate(queries.AggregateRequest(
                    selection, params["start"], params["end"], params["bucket"],
                    params.get("fn") or ["avg"], params["fill"], params["source"]))
        except queries.QueryError as exc:
            return _invalid(exc)
        body = {"twin": selection.twin.slug, "source": result.source, "bucket": result.bucket,
                "start": result.start, "end": result.end, "functions": result.functions,
                "series": result.series}
        return Response(body)


class LatestView(APIView):
    """GET /telemetry/latest: the most recent value of every metric of one asset."""

    @extend_schema(parameters=[LatestParamsSerializer],
                   responses={200: LatestSerializer, **PROBLEMS})
    def get(self, request):
        params = _params(LatestParamsSerializer, request)
        selection = queries.select_series(request.user, params["twin"], params["asset"])
        asset = selection.assets[0]
        with from_replica():
            metrics = queries.latest(asset)
        body = {"twin": selection.twin.slug, "asset": asset.slug, "metrics": metrics}
        return Response(body)


class IngestStatusView(APIView):
    """GET /telemetry/ingest/status: each ingest process's counters, buffer and lags.

    Read from the status files the ``ingest_mqtt`` processes rewrite every second in
    ``INGEST_STATUS_DIR`` (``stale`` when one stopped updating). ``event_lag`` is commit time
    minus event time; ``buffered`` counts messages received but not yet committed.
    ``detection`` lists the visible assets whose detection failed (``telemetry.detection``).
    """

    @extend_schema(responses={200: IngestStatusSerializer})
    def get(self, request):
        if not request.user.has_perm("telemetry.view_telemetrysample"):
            raise PermissionDenied("needs the telemetry.view_telemetrysample permission")
        statuses = read_statuses(settings.INGEST_STATUS_DIR)
        live = [s for s in statuses if not s["stale"]]
        event_lag, commit_lag = merged_lag(live, "event_lag"), merged_lag(live, "commit_lag")
        return Response({
            "processes": statuses, "buffered": sum(int(s.get("buffered", 0)) for s in live),
            "event_lag_p50_s": event_lag.quantile(0.5), "event_lag_p99_s": event_lag.quantile(0.99),
            "commit_lag_p99_s": commit_lag.quantile(0.99),
            "detection": detection_failures(visible_twins(request.user)),
        })


class AssetStateView(APIView):
    """``GET /assets/{id}/state[?at=<ISO 8601>]``: asset-state.v1 now or at a past time."""

    @extend_schema(
        parameters=[OpenApiParameter("at", OpenApiTypes.DATETIME, description=(
            "A past time (ISO 8601 with offset): the state as stored then. Omit for now."))],
        responses={200: OpenApiResponse(description="asset-state.v1")},
        summary="An asset's reported and desired state, and their delta")
    def get(self, request, pk: int):
        asset = get_scoped_or_404(Asset.objects.select_related("twin", "asset_type"),
                                  request.user, pk=pk)
        at = None
        if "at" in request.query_params:
            raw = request.query_params["at"]
            try:
                at = parse_datetime(raw)
            except ValueError:
                at = None
            if at is None or at.tzinfo is None:
                raise ValidationError({"at": "an ISO 8601 date-time with offset, e.g. "
                                             "2026-12-03T01:00:00Z"})
            if at.year < 1900:
                raise ValidationError({"at": "must be after 1900"})
        return Response(asset_state(asset, at))
