"""The supervisor dashboard: pending proposals with their evidence; approve or reject."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from policy import services
from policy.choices import ProposalStatus
from policy.errors import PolicyError
from policy.forms import RejectForm
from policy.models import AuditEntry, Proposal
from simulation.charts import histogram_svg
from telemetry.models import Anomaly
from twins.scoping import visible_twins


def _proposals(user):
    return Proposal.objects.filter(twin__in=visible_twins(user)).select_related(
        "twin", "asset", "anomaly", "simulation", "proposed_by", "decided_by"
    )


@login_required
def dashboard(request):
    """Home: pending proposals first, then recent decisions, counts and open anomalies."""
    proposals = _proposals(request.user)
    counts = dict(proposals.values_list("status").annotate(n=Count("id")))
    return render(request, "policy/dashboard.html", {
        "pending": proposals.filter(status=ProposalStatus.PENDING_APPROVAL)[:50],
        "recent": proposals.exclude(status=ProposalStatus.PENDING_APPROVAL)[:20],
        "counts": counts,
        "open_anomalies": Anomaly.objects.filter(
            asset__twin__in=visible_twins(request.user), status="open"
        ).select_related("asset__twin")[:20],
        "audit_tip": AuditEntry.objects.order_by("-seq").first(),
        "can_approve": request.user.has_perm("policy.approve_proposal"),
    })


@login_required
def proposal_detail(request, pk: int):
    """One proposal: anomaly, simulation (histogram), confidence breakdown, trace, audit."""
    proposal = get_object_or_404(_proposals(request.user), pk=pk)
    run = proposal.simulation
    charts = []
    if run and run.result and run.status == "succeeded":
        for metric in run.request.get("metrics", []):
            charts.append({"metric": metric, "svg": histogram_svg(run.result, metric)})
    audit = AuditEntry.objects.filter(resource_type="proposal", resource_id=str(pk))
    return render(request, "policy/proposal_detail.html", {
        "proposal": proposal, "charts": charts, "audit": audit, "reject_form": RejectForm(),
        "can_approve": request.user.has_perm("policy.approve_proposal"),
    })


@login_required
@require_POST
def approve(request, pk: int):
    """Approve through ``policy.services.approve_proposal`` (404 outside the user's scope)."""
    proposal = get_object_or_404(_proposals(request.user), pk=pk)
    try:
        services.approve_proposal(proposal.pk, actor=request.user, request=request)
        messages.success(request, f"Proposal #{pk} approved; execution started.")
    except PolicyError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    return redirect("dashboard-proposal", pk=pk)


@login_required
@require_POST
def reject(request, pk: int):
    """Reject with a reason through ``policy.services.reject_proposal``."""
    proposal = get_object_or_404(_proposals(request.user), pk=pk)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A reason (at least 3 characters) is required to reject.")
        return redirect("dashboard-proposal", pk=pk)
    try:
        services.reject_proposal(proposal.pk, actor=request.user,
                                 reason=form.cleaned_data["reason"], request=request)
        messages.success(request, f"Proposal #{pk} rejected.")
    except PolicyError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    return redirect("dashboard-proposal", pk=pk)
