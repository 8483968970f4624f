"""The approval queue: every pending proposal the user may see, most urgent first, as cards.

Each card carries what a supervisor decides on without opening the proposal: the triggering
anomaly, the simulation's histograms with their constraint lines, the confidence breakdown,
the interlocks, risk, approvals still needed and time left, and the buttons the user may press
(the same table as the proposal page, ``policy.transitions.VERBS``). The buttons post to
``views.act``, which decides anyway and sends the user back here (``next``).

Queries are bounded by the page, never by the number of proposals: the page of cards (50), its
live approvals (one prefetch) and the twins the user may act on (one query per permission).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import Prefetch, prefetch_related_objects
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from policy import selectors
from policy.models import Approval, Proposal
from policy.transitions import VERBS
from policy.views import proposal_charts, render_fragment
from twins.feed import feed_cursor
from twins.scoping import twins_where

#: Cards per page (the pager, ``templates/_pager.html``, reaches the rest).
CARDS_PER_PAGE = 50
#: The buttons a card offers (the rest are on the proposal's page).
CARD_VERBS = ("approve", "reject")
CARDS = Proposal.objects.select_related("twin", "asset", "anomaly", "simulation",
                                        "proposed_by").defer(
    "evidence", "execution", "rollback", "verification", "anomaly__features")


def _live_approvals(now) -> Prefetch:
    live = Approval.objects.filter(invalidated_at__isnull=True, expires_at__gt=now)
    return Prefetch("approvals", queryset=live.select_related("approver"),
                    to_attr="live_approvals")


def _verbs(proposals: list[Proposal], user) -> dict[int, set[str]]:
    """proposal id → the ``CARD_VERBS`` ``user`` may use on it now: what
    ``policy.transitions.allowed_verbs`` answers, with one twin query per permission instead
    of one check per proposal."""
    permissions = {VERBS[v].permission for v in CARD_VERBS}
    twins = {p: set(twins_where(user, p).values_list("pk", flat=True)) for p in permissions}
    return {p.pk: {v for v in CARD_VERBS if p.status in VERBS[v].from_
                   and p.twin_id in twins[VERBS[v].permission]} for p in proposals}


def _interlocks(proposal: Proposal) -> dict | None:
    """The decision trace's ``interlocks`` step (``{"passed", "detail", "results"}``), None
    when the decision stopped before it."""
    return next((s for s in proposal.decision_trace if s.get("check") == "interlocks"), None)


def _confidence(proposal: Proposal) -> list[tuple[str, float, float | None]]:
    """``[(component, score 0..1, weight)]`` of the confidence breakdown, as on the proposal
    page (weights and detector votes are shown apart)."""
    breakdown = proposal.confidence_breakdown or {}
    weights = breakdown.get("weights") or {}
    return [(k, v, weights.get(k)) for k, v in breakdown.items()
            if k not in ("weights", "detector_votes")]


def _approval_note(proposal: Proposal, user) -> str:
    """Why ``user`` may not add an approval although their role allows it ("" when they may):
    expiry, the four-eyes rule (``SelfApproval``) and one live approval per approver, which
    the approve service refuses anyway."""
    if proposal.expired:
        return "Expired: it can no longer be approved (the expiry sweep will close it)."
    if proposal.proposed_by_id == user.pk:
        return "You proposed this: another approver must approve it (four eyes)."
    if any(a.approver_id == user.pk for a in proposal.live_approvals):
        return "You approved this; it waits for another approver."
    return ""


def _dress(proposal: Proposal, verbs: set[str], user, now) -> Proposal:
    proposal.expired = proposal.expires_at is not None and proposal.expires_at <= now
    proposal.approval_note = _approval_note(proposal, user) if "approve" in verbs else ""
    proposal.can = verbs - {"approve"} if proposal.approval_note else verbs
    proposal.charts = proposal_charts(proposal)
    proposal.interlocks = _interlocks(proposal)
    proposal.confidence_rows = _confidence(proposal)
    proposal.still_needed = max(proposal.approvals_required - len(proposal.live_approvals), 0)
    proposal.confirm = proposal.risk_level in ("HIGH", "CRITICAL")
    return proposal


def _back_here(request) -> str:
    """This page's URL (its page number kept, ``fragment`` dropped): the buttons' ``next``."""
    query = request.GET.copy()
    query.pop("fragment", None)
    base = reverse("approval-queue")
    return f"{base}?{query.urlencode()}" if query else base


def queue_page(request) -> Page:
    """The requested page (``?page=``) of ``selectors.pending_by_urgency``, each proposal
    dressed for its card (``can``, ``approval_note``, ``charts``, ``interlocks``,
    ``confidence_rows``, ``still_needed``, ``expired``, ``confirm``, ``live_approvals``)."""
    now = timezone.now()
    pending = selectors.pending_by_urgency(request.user, CARDS)
    page = Paginator(pending, CARDS_PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    prefetch_related_objects(page.object_list, _live_approvals(now))
    verbs = _verbs(page.object_list, request.user)
    for proposal in page.object_list:
        _dress(proposal, verbs[proposal.pk], request.user, now)
    return page


def _cards(request) -> dict:
    page = queue_page(request)
    return {"page": page, "query": "", "next": _back_here(request)}


#: The queue page's fragments (``?fragment=approval_cards`` renders the cards alone).
QUEUE_FRAGMENTS = {"approval_cards": _cards}


@login_required
def approval_queue(request):
    """Pending proposals on the user's twins, most urgent first (the triggering anomaly's
    severity, then time to expiry), 50 cards a page, each with its evidence and the buttons
    the user may press. Follows the change feed (proposals, anomalies, simulations)."""
    fragment = render_fragment(request, QUEUE_FRAGMENTS, "policy")
    if fragment is not None:
        return fragment
    context = {"feed_cursor": feed_cursor()} | _cards(request)
    return render(request, "policy/approvals.html", context)
