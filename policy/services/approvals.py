"""Human decisions on proposals: approve (four eyes), reject, and expiry (default deny)."""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from policy.choices import ProposalStatus
from policy.errors import ProposalConflict, ProposalExpired, SelfApproval, StaleEvidence
from policy.models import Approval, Proposal
from policy.services.common import audit, load, require, serialize, transition, update
from policy.services.proposals import enqueue_execution
from policy.state import drift
from policy.transitions import VERBS
from twins.roles import role_of

EXPIRABLE = [ProposalStatus.PENDING_APPROVAL, ProposalStatus.APPROVED]
REJECTABLE = list(VERBS["reject"].from_)


def live_approvals(proposal: Proposal, now=None):
    """Approvals of ``proposal`` that still count (not voided, not expired)."""
    return proposal.approvals.filter(invalidated_at__isnull=True,
                                     expires_at__gt=now or timezone.now())


def expire(proposal: Proposal, *, reason: str, request=None) -> Proposal:
    """Move a pending/approved proposal to expired (in the caller's transaction), audited."""
    before = serialize(proposal)
    expired = transition(proposal.pk, EXPIRABLE, status=ProposalStatus.EXPIRED, reason=reason)
    audit(expired, actor="policy", action="proposal.expire", before=before, reason=reason,
          request=request)
    return expired


def mark_stale(proposal: Proposal, drifted: list[dict], *, actor, request=None) -> Proposal:
    """Record that the evidence drifted (in the caller's transaction), audited."""
    if proposal.stale_at is not None:
        return proposal
    before = serialize(proposal)
    stale = update(proposal.pk, stale_at=timezone.now())
    names = ", ".join(d["metric"] for d in drifted)
    audit(stale, actor=actor or "policy", action="proposal.stale", before=before,
          reason=f"evidence drifted beyond tolerance: {names}", request=request)
    return stale


def expire_proposals(now=None) -> int:
    """Expire every pending/approved proposal past ``expires_at`` (Celery beat); the count.

    Each in its own transaction through the conditional transition, so a proposal approved or
    executed concurrently is left alone (the UPDATE finds it in another status).
    """
    now = now or timezone.now()
    due = Proposal.objects.filter(status__in=EXPIRABLE, expires_at__lte=now).values_list(
        "pk", flat=True)
    count = 0
    for pk in list(due):
        try:
            with transaction.atomic():
                expire(load(pk), reason="approval window passed")
            count += 1
        except (ProposalConflict, Proposal.DoesNotExist):
            continue  # decided or deleted meanwhile
    return count


def _blocker(proposal: Proposal, actor, now, request):
    """Stale or expired: record it (caller commits) and return the error to raise."""
    if proposal.expires_at is not None and proposal.expires_at <= now:
        expire(proposal, reason="approval window passed", request=request)
        return ProposalExpired(f"proposal {proposal.pk} expired at {proposal.expires_at}")
    if proposal.stale_at is not None:
        return StaleEvidence(f"proposal {proposal.pk} has stale evidence")
    drifted = drift(proposal.evidence, proposal.asset)
    if drifted:
        mark_stale(proposal, drifted, actor=actor, request=request)
        return StaleEvidence(f"evidence drifted: {', '.join(d['metric'] for d in drifted)}")
    return None


def _record_approval(proposal: Proposal, actor, now) -> int:
    ttl = timedelta(seconds=_ttl_s(proposal))
    try:
        with transaction.atomic():
            Approval.objects.create(proposal=proposal, approver=actor, role=role_of(actor),
                                    created_at=now, expires_at=now + ttl)
    except IntegrityError as exc:
        raise ProposalConflict(f"{actor.get_username()} already approved #{proposal.pk}") from exc
    return live_approvals(proposal, now).count()


def _ttl_s(proposal: Proposal) -> float:
    from policy.services.documents import active_policy

    return active_policy(proposal.twin).rules.approval_rule(proposal.risk_level).ttl_s


def approve_proposal(proposal_id: int, *, actor, request=None) -> Proposal:
    """Record ``actor``'s approval; once enough distinct approvers agree, approve and execute.

    Four eyes: the proposer never approves its own proposal; CRITICAL needs two distinct
    approvers (``approvals_required``). The proposal row is locked (SELECT ... FOR UPDATE) for
    the whole step, so two supervisors approving at once are serialised: for a one-approver
    proposal the second finds it approved (ProposalConflict); for CRITICAL both approvals
    count and the proposal is approved, and its execution enqueued, exactly once.
    Expired or drifted proposals are recorded as such and refused.

    Raises NotPermitted, SelfApproval, ProposalConflict (not pending, already approved by this
    user), ProposalExpired or StaleEvidence.
    """
    proposal = load(proposal_id)
    require(actor, VERBS["approve"].permission, proposal.twin)
    if proposal.proposed_by_id == actor.pk:
        raise SelfApproval(f"{actor.get_username()} proposed #{proposal_id}")
    now, error = timezone.now(), None
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if proposal.status not in VERBS["approve"].from_:
            raise ProposalConflict(f"proposal {proposal_id} is {proposal.status}, expected "
                                   f"{'/'.join(VERBS['approve'].from_)}")
        error = _blocker(proposal, actor, now, request)
        if error is None:
            proposal = _approve_locked(proposal, actor, now, request)
    if error is not None:
        raise error
    return proposal


def _approve_locked(proposal: Proposal, actor, now, request) -> Proposal:
    before = serialize(proposal)
    count = _record_approval(proposal, actor, now)
    if count < proposal.approvals_required:
        recorded = update(proposal.pk)
        audit(recorded, actor=actor, action="proposal.approval_recorded", before=before,
              reason=f"{count} of {proposal.approvals_required} approvals", request=request)
        return recorded
    expires = live_approvals(proposal, now).aggregate(first=Min("expires_at"))["first"]
    approved = transition(proposal.pk, [ProposalStatus.PENDING_APPROVAL],
                          status=ProposalStatus.APPROVED, decided_by=actor, decided_at=now,
                          expires_at=expires)
    audit(approved, actor=actor, action="proposal.approve", before=before,
          reason=f"{count} of {proposal.approvals_required} approvals", request=request)
    transaction.on_commit(lambda: enqueue_execution(proposal.pk))
    return approved


def reject_proposal(proposal_id: int, *, actor, reason: str, request=None) -> Proposal:
    """Reject a pending (or approved, not yet executing) proposal with a reason (required).

    Raises ValueError for a blank reason, NotPermitted, or ProposalConflict as for approval.
    """
    if not reason or not reason.strip():
        raise ValueError("a reason is required to reject a proposal")
    proposal = load(proposal_id)
    require(actor, VERBS["reject"].permission, proposal.twin)
    with transaction.atomic():
        before = serialize(proposal)
        proposal = transition(proposal_id, REJECTABLE, status=ProposalStatus.REJECTED,
                              decided_by=actor, decided_at=timezone.now(), reason=reason.strip())
        audit(proposal, actor=actor, action="proposal.reject", before=before,
              reason=reason.strip(), request=request)
    return proposal
