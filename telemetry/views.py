"""Dashboard actions on anomalies."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from telemetry.anomalies import AnomalyError, acknowledge_anomaly
from telemetry.models import Anomaly
from twins.scoping import visible_twins


@login_required
@require_POST
def acknowledge(request, pk: int):
    """Acknowledge an anomaly with a comment (404 outside the user's scope)."""
    anomaly = get_object_or_404(
        Anomaly.objects.filter(asset__twin__in=visible_twins(request.user))
        .select_related("asset__twin"), pk=pk,
    )
    try:
        acknowledge_anomaly(anomaly.pk, actor=request.user,
                            comment=request.POST.get("comment", ""), request=request)
        messages.success(request, f"Anomaly #{pk} acknowledged.")
    except (AnomalyError, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("asset-detail", twin=anomaly.asset.twin.slug, asset=anomaly.asset.slug)
