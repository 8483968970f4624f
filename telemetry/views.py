"""Dashboard pages of anomalies: the scoped list with filters, and acknowledging one."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from telemetry.anomalies import ACKNOWLEDGE_PERMISSION, AnomalyError, acknowledge_anomaly
from telemetry.choices import AnomalyStatus, Severity
from telemetry.models import Anomaly
from twins.feed import feed_cursor
from twins.scoping import scoped, twins_where, visible_twins

#: The time filter's choices (``since``): label and how far back from now.
SINCE = {"1h": ("last hour", timedelta(hours=1)), "24h": ("last day", timedelta(days=1)),
         "7d": ("last week", timedelta(days=7)), "": ("any time", None)}


def _filtered(request):
    """Scoped anomalies narrowed by the query's status, severity, twin, asset and since."""
    # "proposals" is the reverse of policy's Proposal.anomaly: read by name, not imported,
    # since policy sits above telemetry.
    anomalies = scoped(Anomaly.objects, request.user, "asset__twin").select_related(
        "asset__twin", "acknowledged_by").prefetch_related("proposals")
    query = request.GET
    if query.get("status") in AnomalyStatus.values:
        anomalies = anomalies.filter(status=query["status"])
    if query.get("severity") in Severity.values:
        anomalies = anomalies.filter(severity=query["severity"])
    if query.get("twin"):
        anomalies = anomalies.filter(asset__twin__slug=query["twin"])
    if query.get("asset"):
        anomalies = anomalies.filter(asset__slug=query["asset"])
    since = SINCE.get(query.get("since", ""), SINCE[""])[1]
    if since is not None:
        anomalies = anomalies.filter(last_seen_at__gte=timezone.now() - since)
    return anomalies.order_by("-started_at", "-pk")


def _list_context(request) -> dict:
    page = Paginator(_filtered(request), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    for name in ("page", "fragment"):
        query.pop(name, None)
    operable = set(twins_where(request.user, ACKNOWLEDGE_PERMISSION).values_list("pk", flat=True))
    encoded = query.urlencode()
    return {"page": page, "query": encoded, "operable": operable,
            "here": f"{request.path}?{encoded}" if encoded else request.path}


@login_required
def anomaly_list(request):
    """``/anomalies/``: anomalies of the user's twins, newest first, 50 per page, filtered by
    status, severity, twin, asset and time; Acknowledge on open ones for those who may."""
    cursor = feed_cursor()
    if request.GET.get("fragment") == "list":
        response = render(request, "telemetry/_partials/anomaly_rows.html",
                          _list_context(request))
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "telemetry/anomaly_list.html", _list_context(request) | {
        "feed_cursor": cursor, "twins": visible_twins(request.user).only("slug", "name"),
        "statuses": AnomalyStatus.choices, "severities": Severity.choices,
        "since_choices": [(k, v[0]) for k, v in SINCE.items()], "selected": request.GET,
    })


def _back(request, anomaly: Anomaly) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return anomaly_url(anomaly)


def anomaly_url(anomaly: Anomaly) -> str:
    """The asset page of ``anomaly``'s asset."""
    from django.urls import reverse

    return reverse("asset-detail", args=[anomaly.asset.twin.slug, anomaly.asset.slug])


@login_required
@require_POST
def acknowledge(request, pk: int):
    """Acknowledge an anomaly with a comment (404 outside the user's scope; refused unless
    ``twins.scoping.may(user, "telemetry.acknowledge_anomaly", twin)``, which the service
    checks), then back to ``next`` (a page of this site) or the asset page."""
    anomaly = get_object_or_404(
        scoped(Anomaly.objects, request.user, "asset__twin").select_related("asset__twin"),
        pk=pk,
    )
    try:
        acknowledge_anomaly(anomaly.pk, actor=request.user,
                            comment=request.POST.get("comment", ""), request=request)
        messages.success(request, f"Anomaly #{pk} acknowledged.")
    except (AnomalyError, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect(_back(request, anomaly))
