"""The supervisor dashboard: proposals with their evidence and audit trail; act on them.

Every page narrows through ``twins.scoping`` (out-of-scope proposals are 404) and every button
posts to ``act``, which calls the same ``policy.services`` function as the API. Execute and
roll back only claim the command in the request (refusals show at once); the command is sent
on the ``actions`` queue and the page shows the outcome once the asset answered.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from policy import selectors, services
from policy.choices import ProposalStatus
from policy.errors import NotPermitted, PolicyError
from policy.forms import ReasonForm
from policy.models import PolicyDocument, Proposal
from policy.transitions import allowed_verbs
from simulation.charts import histogram_svg
from twins.audit_chain import latest_anchor, verify_chain
from twins.feed import feed_cursor
from twins.models import AuditEntry
from twins.scoping import get_scoped_or_404, scoped, visible_twins

PROPOSALS = Proposal.objects.select_related(
    "twin", "asset", "anomaly", "simulation", "proposed_by", "decided_by")
#: Proposals for lists: no simulation, and none of the large JSON evidence a list never shows.
LISTED = Proposal.objects.select_related("twin", "asset", "anomaly", "decided_by").defer(
    "evidence", "confidence_breakdown", "decision_trace", "rollback", "anomaly__features")


def _home_summary(request) -> dict:
    counts = selectors.open_anomaly_counts(request.user)
    proposals = scoped(LISTED, request.user)
    pending = proposals.filter(status=ProposalStatus.PENDING_APPROVAL)
    oldest = pending.exclude(expires_at=None).order_by("expires_at").first()
    since = timezone.now() - timedelta(hours=24)
    return {"anomaly_counts": counts, "critical_open": counts["critical"],
            "n_pending": pending.count(), "oldest_pending": oldest,
            "n_expired": proposals.filter(status=ProposalStatus.EXPIRED,
                                          expires_at__gte=since).count(),
            "n_in_flight": proposals.filter(status__in=selectors.IN_FLIGHT).count()}


#: Tiles on one overview page: the page's work is bounded whatever the plant's size (a
#: thousand tiles cost over half a second to build); the rest are a page away (``?plant=``).
OVERVIEW_TILES = 100


def _home_plant(request) -> dict:
    # Problems first (selectors.assets_by_problem), so page 1 shows every asset that needs
    # someone, however many normal ones the plant has.
    page = Paginator(selectors.assets_by_problem(request.user), OVERVIEW_TILES).get_page(
        request.GET.get("plant"))
    twins = selectors.asset_states(request.user, assets=page.object_list)
    verdicts = selectors.policy_verdicts(list(twins))
    for twin, states in twins.items():
        for state in states:
            state.href = reverse("asset-detail", args=[twin.slug, state.asset.slug])
    return {"plant": [(t, assets, verdicts[t.pk]) for t, assets in twins.items()],
            "plant_page": page}


def _home_queue(request) -> dict:
    return {"pending": selectors.approval_queue(request.user, LISTED),
            "expired": selectors.recently_expired(request.user, LISTED),
            "critical_open": selectors.open_anomaly_counts(request.user)["critical"]}


def _home_recent(request) -> dict:
    return {"recent": scoped(LISTED, request.user).exclude(
        status__in=[ProposalStatus.PENDING_APPROVAL, ProposalStatus.EXPIRED])[:20]}


def _home_activity(request) -> dict:
    return {"activity": selectors.visible_audit(request.user).order_by("-seq")[:15]}


#: The home page's fragments (``?fragment=<name>`` renders one alone, for live refreshes).
HOME_FRAGMENTS = {"summary": _home_summary, "plant": _home_plant, "queue": _home_queue,
                  "recent": _home_recent, "activity": _home_activity}


def render_fragment(request, fragments: dict, template_dir: str):
    """The fragment named by ``?fragment=`` alone (404 for an unknown name), with the feed
    cursor taken before its data in the ``X-Feed-Cursor`` header; None without the
    parameter."""
    name = request.GET.get("fragment")
    if name is None:
        return None
    if name not in fragments:
        raise Http404("no such fragment")
    cursor = feed_cursor()
    response = render(request, f"{template_dir}/_partials/{name}.html", fragments[name](request))
    response["X-Feed-Cursor"] = cursor
    response["Cache-Control"] = "no-store"
    return response


@login_required
def dashboard(request):
    """Home: the plant (asset states per twin), what is open (anomalies by severity, approvals
    waiting or expired), what just happened (decisions, audit entries), the policy in force.
    Every section refreshes itself from the change feed (``static/console.js``)."""
    fragment = render_fragment(request, HOME_FRAGMENTS, "policy")
    if fragment is not None:
        return fragment
    context = {"feed_cursor": feed_cursor()}
    for build in HOME_FRAGMENTS.values():
        context |= build(request)
    twins = list(visible_twins(request.user)[:20])
    verdicts = selectors.policy_verdicts(twins)
    context |= {"policies": [(t, verdicts[t.pk]) for t in twins],
                "audit_tip": AuditEntry.objects.order_by("-seq").first(),
                "anchor": latest_anchor()}
    return render(request, "policy/dashboard.html", context)


#: The audit page verifies the chain on load up to this many entries; beyond, on request.
AUTO_VERIFY_MAX_ENTRIES = 20_000
AUDIT_FILTERS = ("actor", "action", "resource_type", "resource_id", "twin_slug")


def _audit_entries(request):
    entries = selectors.visible_audit(request.user).order_by("-seq")
    for name in AUDIT_FILTERS:
        value = request.GET.get(name, "").strip()
        if value:
            entries = entries.filter(**{f"{name}__icontains": value})
    return entries


def _may_verify(user) -> bool:
    return user.is_staff or user.has_perm("policy.approve_proposal")


def _chain_report(request, tip) -> tuple[object | None, float | None]:
    # Verifying reads the whole chain: on request only for supervisors and admins.
    wanted = request.GET.get("verify") == "1" and _may_verify(request.user)
    if tip is None or not (wanted or tip.seq <= AUTO_VERIFY_MAX_ENTRIES):
        return None, None
    started = time.perf_counter()
    report = verify_chain()
    return report, (time.perf_counter() - started) * 1000


@login_required
def audit_log(request):
    """The audit log the user may read (filters: actor, action, resource type and id, twin;
    newest first, 100 per page), the chain's verification (``twins.audit_chain``) and the
    newest anchor."""
    cursor = feed_cursor()
    page = Paginator(_audit_entries(request), 100).get_page(request.GET.get("page"))
    if request.GET.get("fragment") == "entries":
        response = render(request, "policy/_partials/entries.html", {"page": page})
        response["X-Feed-Cursor"] = cursor
        return response
    tip = AuditEntry.objects.order_by("-seq").first()
    report, verify_ms = _chain_report(request, tip)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "policy/audit_log.html", {
        "page": page, "tip": tip, "report": report, "verify_ms": verify_ms,
        "anchor": latest_anchor(), "filters": {n: request.GET.get(n, "") for n in AUDIT_FILTERS},
        "query": query.urlencode(), "feed_cursor": cursor,
        "auto_verify_max": AUTO_VERIFY_MAX_ENTRIES, "may_verify": _may_verify(request.user),
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


def proposal_charts(proposal: Proposal) -> list[dict]:
    """``[{"metric", "svg"}]``: the histogram (``simulation.charts.histogram_svg``, with its
    constraint lines) of each metric the proposal's simulation ran; ``[]`` without a
    succeeded run."""
    run = proposal.simulation
    if not (run and run.result and run.status == "succeeded"):
        return []
    return [{"metric": m, "svg": histogram_svg(run.result, m)}
            for m in run.request.get("metrics", [])]


@login_required
def proposal_detail(request, pk: int):
    """One proposal: anomaly, evidence, simulation, decision, approvals, execution, audit.
    Follows the change feed: the proposal's own events re-render it (``?fragment=proposal``)."""
    cursor = feed_cursor()
    proposal = get_scoped_or_404(PROPOSALS, request.user, pk=pk)
    context = {
        "proposal": proposal, "charts": proposal_charts(proposal), "audit": audit_trail(proposal),
        "approvals": proposal.approvals.select_related("approver"),
        "reason_form": ReasonForm(), "can": allowed_verbs(proposal, request.user),
        "expired": proposal.expires_at is not None and proposal.expires_at <= timezone.now(),
        "feed_cursor": cursor,
    }
    if request.GET.get("fragment") == "proposal":  # the page follows the proposal's events
        response = render(request, "policy/_partials/proposal.html", context)
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "policy/proposal_detail.html", context)


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


def _back(request, pk: int) -> str:
    """Where ``act`` sends the user: the form's ``next`` when it is a URL of this site (the
    approval queue passes itself), else the proposal's page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse("dashboard-proposal", args=[pk])


QUEUED = {"execute": "execution claimed, command queued", "rollback": "rollback claimed, "
          "command queued"}


@login_required
@require_POST
def act(request, pk: int, verb: str):
    """approve / reject / execute / rollback / resimulate through ``policy.services``; a user
    the services refuse (``NotPermitted``) gets a 403 (a problem body with the reason), any
    other refusal or success a redirect with a message: to the form's ``next`` when it is a
    URL of this site, else to the proposal."""
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
    except NotPermitted as exc:
        # A button the page never showed this user (a forged or stale form): 403.
        raise PermissionDenied(f"{exc.title}: {exc}") from exc
    except PolicyError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    except ValueError as exc:
        messages.error(request, str(exc))
    return redirect(_back(request, pk))
