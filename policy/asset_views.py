"""Asset pages of the supervisor console: the asset list grouped by twin, and one asset.

They live in policy, the top domain app, because they show every lower app at once: telemetry
charts and anomalies, and the proposals acting on the asset."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Max, Min, Prefetch
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policy import selectors
from policy.models import Proposal
from telemetry.anomalies import ACKNOWLEDGE_PERMISSION
from telemetry.calibration import config_for
from telemetry.chart_data import RANGES, chart_series, choose_window
from telemetry.models import Anomaly, AssetCalibration, DetectionState, TelemetryEvent
from telemetry.queries import QueryError
from twins.feed import feed_cursor
from twins.models import Asset, ReportedMetric
from twins.scoping import get_scoped_or_404, may, visible_twins
from twins.state import expected_cadence, state_of

ASSETS_PER_PAGE = 200


@login_required
def twin_list(request):
    """Every visible twin (or ``?twin=``) with its assets: state, open anomalies by severity,
    last receipt; ``ASSETS_PER_PAGE`` assets a page."""
    twins = visible_twins(request.user)
    if request.GET.get("twin"):
        twins = twins.filter(slug=request.GET["twin"])
    page = Paginator(selectors.visible_assets(request.user, twins), ASSETS_PER_PAGE) \
        .get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "policy/assets/asset_list.html", {
        "twins": selectors.asset_states(request.user, assets=page.object_list).items(),
        "page": page, "query": query.urlencode(),
    })


def _anomalies(asset: Asset) -> list[Anomaly]:
    anomalies = list(
        Anomaly.objects.filter(asset=asset).select_related("acknowledged_by").prefetch_related(
            Prefetch("proposals", queryset=Proposal.objects.only("pk", "anomaly_id", "status")))
        .order_by("-started_at")[:200])
    for anomaly in anomalies:
        shares = anomaly.features.get("contributions", {})
        anomaly.top_contributions = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
    return anomalies


def _charts(request, asset: Asset, interval_s: float | None) -> dict:
    bounds = TelemetryEvent.objects.filter(asset=asset).aggregate(first=Min("ts"), last=Max("ts"))
    window = choose_window(request.GET, bounds["first"], bounds["last"], interval_s)
    if window is None:
        return {"window": None, "chart_data": [], "chart_error": ""}
    try:
        data, source = chart_series(request.user, asset, window, interval_s)
    except QueryError as exc:
        return {"window": window, "chart_data": [], "chart_error": str(exc)}
    episodes = Anomaly.objects.filter(asset=asset, last_seen_at__gte=window.start,
                                      started_at__lte=window.end)
    return {"window": window, "source": source, "chart_error": "", "chart_data": {
        "series": data,
        "episodes": [[a.started_at.timestamp(), (a.ended_at or a.last_seen_at).timestamp(),
                      a.severity] for a in episodes.order_by("started_at")[:500]],
    }}


def _asset_context(request, asset: Asset) -> dict:
    reported = list(ReportedMetric.objects.filter(asset=asset).order_by("metric"))
    state = state_of(asset, reported, timezone.now())
    interval_s = expected_cadence(asset, reported)
    return {
        "asset": asset, "anomalies": _anomalies(asset), "state": state,
        "reported": [{"metric": m} | r for m, r in state["reported"].items()],
        "last_received": parse_datetime(state["last_received_at"] or ""),
        "interval_s": interval_s,
        "calibration": AssetCalibration.objects.filter(asset=asset).first(),
        "detector_name": config_for(asset).detector,
        "detection": DetectionState.objects.filter(asset=asset).first(),
        "can_acknowledge": may(request.user, ACKNOWLEDGE_PERMISSION, asset.twin),
        "ranges": [(k, v[0]) for k, v in RANGES.items()],
        "here": request.get_full_path(),
    } | _charts(request, asset, interval_s)


@login_required
def asset_detail(request, twin: str, asset: str):
    """An asset: each metric charted over a chosen range (min/max/mean per bucket, anomaly
    episodes shaded, gaps left open), its current reported state, what-if model and
    anomalies. The anomalies table follows the feed (``?fragment=anomalies``)."""
    cursor = feed_cursor()
    obj = get_scoped_or_404(Asset.objects.select_related("twin", "asset_type"), request.user,
                            "twin",
                            twin__slug=twin, slug=asset)
    if request.GET.get("fragment") == "anomalies":
        response = render(request, "policy/assets/_partials/anomalies.html", {
            "asset": obj, "anomalies": _anomalies(obj), "here": request.path,
            "can_acknowledge": may(request.user, ACKNOWLEDGE_PERMISSION, obj.twin)})
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "policy/assets/asset_detail.html", _asset_context(request, obj)
                  | {"model": getattr(obj, "whatif_model", None), "feed_cursor": cursor})
