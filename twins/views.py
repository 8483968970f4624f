"""Twin and asset pages of the dashboard."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, render

from telemetry.calibration import config_for
from telemetry.charts import line_chart_svg
from telemetry.models import Anomaly, AssetCalibration, DetectionState
from telemetry.series import load_series
from twins.models import Asset
from twins.scoping import visible_twins


@login_required
def twin_list(request):
    """Every visible twin with its assets and their open-anomaly counts."""
    assets = (
        Asset.objects.filter(twin__in=visible_twins(request.user)).select_related("twin")
        .annotate(n_anomalies=Count("anomalies"))
    )
    return render(request, "twins/twin_list.html", {"assets": assets})


@login_required
def asset_detail(request, twin: str, asset: str):
    """An asset: each metric charted with anomaly episodes shaded, and its anomalies listed."""
    obj = get_object_or_404(
        Asset.objects.filter(twin__in=visible_twins(request.user)).select_related("twin"),
        twin__slug=twin, slug=asset,
    )
    series = load_series(obj, after=None, history=0)
    anomalies = list(Anomaly.objects.filter(asset=obj).select_related("acknowledged_by")
                     .order_by("started_at"))
    for anomaly in anomalies:
        shares = anomaly.features.get("contributions", {})
        anomaly.top_contributions = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
    episodes = [(a.started_at, a.ended_at or a.last_seen_at) for a in anomalies]
    charts = [
        {"metric": m, "unit": obj.unit_of(m),
         "svg": line_chart_svg(series.ts, series.X[:, j], episodes, f"{m} [{obj.unit_of(m)}]")}
        for j, m in enumerate(series.metrics)
    ]
    model = getattr(obj, "whatif_model", None)
    return render(request, "twins/asset_detail.html", {
        "asset": obj, "charts": charts, "anomalies": anomalies, "model": model,
        "n_rows": len(series.ts), "calibration": AssetCalibration.objects.filter(asset=obj).first(),
        "detector_name": config_for(obj).detector,
        "detection": DetectionState.objects.filter(asset=obj).first(),
        "can_acknowledge": request.user.has_perm("policy.approve_proposal"),
    })
