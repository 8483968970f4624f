"""The supervisor dashboard: proposals with their evidence and audit trail; act on them.

Every page narrows through ``twins.scoping`` (out-of-scope proposals are 404) and every button
posts to ``act``, which calls the same ``policy.services`` function as the API. Execute and
roll back only claim the command in the request (refusals show at once); the command is sent
on the ``actions`` queue and the page shows the outcome once the asset answered.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from policy import services
from policy.audit_chain import latest_anchor
from policy.choices import ProposalStatus
from policy.errors import PolicyError
from policy.forms import ReasonForm
from policy.models import AuditEntry, PolicyDocument, Proposal
from simulation.charts import histogram_svg
from telemetry.models import Anomaly
from twins.scoping import get_scoped_or_404, scoped, visible_twins

PROPOSALS = Proposal.objects.select_related(
    "twin", "asset", "anomaly", "simulation", "proposed_by", "decided_by")


@login_required
def dashboard(request):
    """Home: pending proposals first, recent decisions, counts, open anomalies, policy, audit."""
    proposals = scoped(PROPOSALS, request.user)
    twins = visible_twins(request.user)
    return render(request, "policy/dashboard.html", {
        "pending": proposals.filter(status=ProposalStatus.PENDING_APPROVAL)[:50],
        "recent": proposals.exclude(status=ProposalStatus.PENDING_APPROVAL)[:20],
        "counts": dict(proposals.values_list("status").annotate(n=Count("id")).order_by()),
        "open_anomalies": scoped(Anomaly.objects, request.user, "asset__twin")
        .filter(status="open").select_related("asset__twin")[:20],
        "policies": [(t, services.active_policy(t)) for t in twins[:20]],
        "audit_tip": AuditEntry.objects.order_by("-seq").first(),
        "anchor": latest_anchor(),
    })


def audit_trail(proposal: Proposal):
    """Audit entries linked to the proposal: itself, its anomaly, every simulation it was
    decided on (re-simulations included) and the policy version in force, in chain order."""
    own = AuditEntry.objects.filter(resource_type="proposal", resource_id=str(proposal.pk))
    simulations = {str(s) for s in own.values_list("after__simulation", flat=True) if s}
    links = Q(pk__in=own.values("pk")) | Q(resource_type="simulation",
                                           resource_id__in=simulations)
    if proposal.anomaly_id:
        links |= Q(resource_type="anomaly", resource_id=str(proposal.anomaly_id))
    document = PolicyDocument.objects.filter(twin=proposal.twin,
                                             version=proposal.policy_version).first()
    if document is not None:
        links |= Q(resource_type="policy", resource_id=str(document.pk))
    return AuditEntry.objects.filter(links).order_by("seq")


def _charts(proposal: Proposal) -> list[dict]:
    run = proposal.simulation
    if not (run and run.result and run.status == "succeeded"):
        return []
    return [{"metric": m, "svg": histogram_svg(run.result, m)}
            for m in run.request.get("metrics", [])]


def available_actions(proposal: Proposal, user) -> set[str]:
    """The buttons to show: verbs the proposal's status allows and the user's role may use."""
    status, verbs = proposal.status, set()
    waiting = status in (ProposalStatus.PENDING_APPROVAL, ProposalStatus.APPROVED,
                         ProposalStatus.NEEDS_ANALYSIS)
    if status == ProposalStatus.PENDING_APPROVAL and user.has_perm("policy.approve_proposal"):
        verbs.add("approve")
    if waiting and user.has_perm("policy.approve_proposal"):
        verbs.add("reject")
    if waiting and user.has_perm("policy.add_proposal"):
        verbs.add("resimulate")
    if status == ProposalStatus.APPROVED and user.has_perm("policy.execute_proposal"):
        verbs.add("execute")
    if status in (ProposalStatus.EXECUTED, ProposalStatus.VERIFYING, ProposalStatus.VERIFIED) \
            and proposal.rollback_started_at is None and user.has_perm("policy.rollback_proposal"):
        verbs.add("rollback")
    return verbs


@login_required
def proposal_detail(request, pk: int):
    """One proposal: anomaly, evidence, simulation, decision, approvals, execution, audit."""
    proposal = get_scoped_or_404(PROPOSALS, request.user, pk=pk)
    return render(request, "policy/proposal_detail.html", {
        "proposal": proposal, "charts": _charts(proposal), "audit": audit_trail(proposal),
        "approvals": proposal.approvals.select_related("approver"),
        "reason_form": ReasonForm(), "can": available_actions(proposal, request.user),
    })


def _call(verb: str, pk: int, request) -> str:
    user = request.user
    if verb in ("reject", "rollback"):
        form = ReasonForm(request.POST)
        if not form.is_valid():
            raise ValueError(f"a reason (at least 3 characters) is required to {verb}")
        reason = form.cleaned_data["reason"]
        fn = services.reject_proposal if verb == "reject" else services.start_rollback
        return fn(pk, actor=user, reason=reason, request=request).status
    fn = {"approve": services.approve_proposal, "execute": services.start_execution,
          "resimulate": services.resimulate_proposal}[verb]
    return fn(pk, actor=user, request=request).status


QUEUED = {"execute": "execution claimed, command queued", "rollback": "rollback claimed, "
          "command queued"}


@login_required
@require_POST
def act(request, pk: int, verb: str):
    """approve / reject / execute / rollback / resimulate through ``policy.services``."""
    if verb not in ("approve", "reject", "execute", "rollback", "resimulate"):
        raise Http404("no such action")
    proposal = get_scoped_or_404(PROPOSALS, request.user, pk=pk)
    try:
        status = _call(verb, proposal.pk, request)
        if verb in QUEUED:
            messages.success(request, f"Proposal #{pk}: {QUEUED[verb]}; now {status}. "
                                      "Reload for the asset's answer.")
        else:
            messages.success(request, f"Proposal #{pk}: {verb} done; now {status}.")
    except PolicyError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    except ValueError as exc:
        messages.error(request, str(exc))
    return redirect("dashboard-proposal", pk=pk)
