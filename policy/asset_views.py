"""Asset pages of the supervisor console: the asset list grouped by twin, and one asset.

They live in policy, the top domain app, because they show every lower app at once: telemetry
charts and anomalies, and the proposals acting on the asset."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import DateTimeField, Max, Min, OuterRef, Prefetch, Q, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policy import selectors
from policy.choices import ProposalStatus
from policy.models import Proposal
from telemetry.anomalies import ACKNOWLEDGE_PERMISSION
from telemetry.calibration import config_for
from telemetry.chart_data import RANGES, Window, chart_series, choose_window, live_extension
from telemetry.models import Anomaly, AssetCalibration, DetectionState, TelemetryEvent
from telemetry.queries import QueryError
from twins.feed import feed_cursor
from twins.models import Asset, ReportedMetric
from twins.scoping import get_scoped_or_404, may, visible_twins
from twins.state import expected_cadence, state_of

ASSETS_PER_PAGE = 200
#: At most this many proposals' markers on one chart range (the newest executions kept).
MAX_MARKER_PROPOSALS = 200
#: Marker kinds: the glyph and words of their labels (text, not colour alone).
MARKER_WORDS = {"executed": "▲ executed", "verified": "✓ verified",
                "rolled_back": "↺ rolled back"}


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


def _sensor_clock(wall: str) -> Subquery:
    """The sensor time of the asset's newest reading received by OpsTwin at or before the
    outer proposal's wall-clock field ``wall``: one index read (``tevent_asset_received``)."""
    return Subquery(TelemetryEvent.objects.filter(
        asset=OuterRef("asset_id"), received_at__lte=OuterRef(wall),
    ).order_by("-received_at", "-ts").values("ts")[:1])


def action_markers(asset: Asset, window: Window) -> list[dict]:
    """The asset's executed actions, verifications and rollbacks within ``window``, oldest
    first: ``[{"t": sensor datetime, "at": wall-clock datetime, "kind": "executed" |
    "verified" | "rolled_back", "label": "▲ executed #12 reduce_load", "href": proposal
    page}]``. One query, at most ``MAX_MARKER_PROPOSALS`` proposals.

    The charts' axis is sensor time (the device's clock; a replayed asset's readings are
    years old) while executions, verifications and rollbacks happen on OpsTwin's clock. A
    marker is placed at **the sensor time of the newest reading OpsTwin had received when it
    happened** (``executed_at``, the verification's ``judged_at``, ``rollback_started_at``):
    where the asset's own clock stood at that moment, as seen by OpsTwin. It is the anchor
    the verification window already uses (``from_ts``: the newest reading at execution), it
    needs no assumption about clock offset or replay speed, and a marker never lands after
    the newest reading. An action taken while the asset was silent lands at its last
    reading; one taken before any reading was received has no place and is left out.
    """
    span = (window.start, window.end)
    rows = (Proposal.objects.filter(asset=asset, executed_at__isnull=False)
            .annotate(judged_at=Cast(KT("verification__judged_at"), DateTimeField()))
            .annotate(executed_ts=_sensor_clock("executed_at"),
                      verified_ts=_sensor_clock("judged_at"),
                      rolled_back_ts=_sensor_clock("rollback_started_at"))
            .filter(Q(executed_ts__range=span)
                    | Q(verification__outcome="verified", verified_ts__range=span)
                    | Q(status=ProposalStatus.ROLLED_BACK, rolled_back_ts__range=span))
            .only("pk", "action", "status", "executed_at", "rollback_started_at",
                  "verification")
            .order_by("-executed_at")[:MAX_MARKER_PROPOSALS])
    markers = []
    for p in rows:
        verified = (p.verification or {}).get("outcome") == "verified"
        href = reverse("dashboard-proposal", args=[p.pk])
        for kind, t, at, happened in (
                ("executed", p.executed_ts, p.executed_at, True),
                ("verified", p.verified_ts, p.judged_at, verified),
                ("rolled_back", p.rolled_back_ts, p.rollback_started_at,
                 p.status == ProposalStatus.ROLLED_BACK)):
            if happened and t is not None and window.start <= t <= window.end:
                label = f"{MARKER_WORDS[kind]} #{p.pk}"
                markers.append({"t": t, "at": at, "kind": kind, "href": href,
                                "label": f"{label} {p.action}" if kind == "executed" else label})
    return sorted(markers, key=lambda m: (m["t"], m["at"]))


def marker_rows(markers: list[dict]) -> list[list]:
    """``action_markers`` as the chart JSON carries them: ``[[t, kind, label, href]]``, ``t``
    in epoch seconds of sensor time."""
    return [[m["t"].timestamp(), m["kind"], m["label"], m["href"]] for m in markers]


def _markers_fragment(request, asset: Asset) -> dict:
    bounds = TelemetryEvent.objects.filter(asset=asset).aggregate(first=Min("ts"), last=Max("ts"))
    window = choose_window(request.GET, bounds["first"], bounds["last"], None)
    markers = action_markers(asset, window) if window is not None else []
    return {"markers": markers, "marker_rows": marker_rows(markers)}


def _charts(request, asset: Asset, interval_s: float | None) -> dict:
    bounds = TelemetryEvent.objects.filter(asset=asset).aggregate(first=Min("ts"), last=Max("ts"))
    window = choose_window(request.GET, bounds["first"], bounds["last"], interval_s)
    if window is None:
        return {"window": None, "chart_data": [], "chart_error": "", "markers": []}
    try:
        data, source = chart_series(request.user, asset, window, interval_s)
    except QueryError as exc:
        return {"window": window, "chart_data": [], "chart_error": str(exc), "markers": []}
    episodes = Anomaly.objects.filter(asset=asset, last_seen_at__gte=window.start,
                                      started_at__lte=window.end)
    markers = action_markers(asset, window)
    return {"window": window, "source": source, "chart_error": "", "markers": markers,
            "chart_data": {
                "series": data,
                "episodes": [[a.started_at.timestamp(),
                              (a.ended_at or a.last_seen_at).timestamp(), a.severity]
                             for a in episodes.order_by("started_at")[:500]],
                "markers": marker_rows(markers),
                "live": live_extension(asset, window, interval_s),
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
    episodes shaded, executed actions, verifications and rollbacks marked and listed under
    the charts (``action_markers``: placed in sensor time), gaps left open), its current
    reported state, what-if model and anomalies. The anomalies table and the list of actions
    follow the feed (``?fragment=anomalies``, ``?fragment=markers``: the list and the markers'
    JSON, which the charts redraw from); on a live range the charts extend from the feed's
    ``asset.state`` events (``static/asset_charts.js``)."""
    cursor = feed_cursor()
    obj = get_scoped_or_404(Asset.objects.select_related("twin", "asset_type"), request.user,
                            "twin",
                            twin__slug=twin, slug=asset)
    if request.GET.get("fragment") == "markers":
        response = render(request, "policy/assets/_partials/markers.html",
                          _markers_fragment(request, obj))
        response["X-Feed-Cursor"] = cursor
        return response
    if request.GET.get("fragment") == "anomalies":
        response = render(request, "policy/assets/_partials/anomalies.html", {
            "asset": obj, "anomalies": _anomalies(obj), "here": request.path,
            "can_acknowledge": may(request.user, ACKNOWLEDGE_PERMISSION, obj.twin)})
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "policy/assets/asset_detail.html", _asset_context(request, obj)
                  | {"model": getattr(obj, "whatif_model", None), "feed_cursor": cursor})
