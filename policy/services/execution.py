"""Executing an approved proposal exactly once, and rolling an executed one back.

Execution is claimed (approved → executing) under the proposal's row lock after every
pre-flight check passed, and that claim commits before the command is sent: a second caller
(an executor clicking twice, a retried task) finds "executing" and gets ProposalConflict,
so the command is published once. Pre-flight, in order: not expired; the approvals still
count (human path) or the policy is still trusted (automatic path); the evidence has not
drifted; every interlock guarding the action passes now. A failed check is recorded (audited)
and refused; the proposal stays approved until it expires or is re-simulated.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from policy import interlocks
from policy.choices import Decision, ProposalStatus
from policy.commands import send_command
from policy.errors import AutomationDenied, InterlockBlocked, NoRollback, ProposalConflict
from policy.models import Proposal
from policy.services.approvals import _blocker, expire, live_approvals
from policy.services.common import audit, load, require, serialize, transition, update
from policy.services.documents import active_policy
from policy.services.verification import start_verification

ROLLBACK_FROM = [ProposalStatus.EXECUTED, ProposalStatus.VERIFYING, ProposalStatus.VERIFIED]


def _authorised(proposal: Proposal, now, request):
    """The approval behind the execution still holds; else record why and return the error."""
    if proposal.decision == Decision.AUTO_EXECUTE and not proposal.approvals.exists():
        policy = active_policy(proposal.twin)
        if not policy.trusted:
            before = serialize(proposal)
            back = transition(proposal.pk, [ProposalStatus.APPROVED],
                              status=ProposalStatus.PENDING_APPROVAL, decided_at=None)
            audit(back, actor="policy", action="proposal.automation_denied", before=before,
                  reason=policy.reason, request=request)
            return AutomationDenied(policy.reason)
        return None
    if live_approvals(proposal, now).count() < proposal.approvals_required:
        expire(proposal, reason="approvals lapsed before execution", request=request)
        return ProposalConflict(f"proposal {proposal.pk}: approvals lapsed")
    return None


def _interlocked(proposal: Proposal, action: str, actor, now, request):
    policy = active_policy(proposal.twin)
    results = interlocks.evaluate(policy.rules.interlocks, asset=proposal.asset, action=action,
                                  now=now)
    failed = [r.detail for r in results if not r.passed]
    if not failed:
        return [r.to_json() for r in results], None
    audit(proposal, actor=actor or "executor", action="proposal.blocked",
          reason="interlock: " + "; ".join(failed), request=request)
    return [r.to_json() for r in results], InterlockBlocked("; ".join(failed))


def _claim(proposal_id: int, actor, request) -> Proposal:
    now, error = timezone.now(), None
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if proposal.status != ProposalStatus.APPROVED:
            raise ProposalConflict(f"proposal {proposal_id} is {proposal.status}, expected "
                                   f"{ProposalStatus.APPROVED}")
        error = _blocker(proposal, actor, now, request) or _authorised(proposal, now, request)
        if error is None:
            checks, error = _interlocked(proposal, proposal.action, actor, now, request)
        if error is None:
            before = serialize(proposal)
            proposal = transition(proposal_id, [ProposalStatus.APPROVED],
                                  status=ProposalStatus.EXECUTING,
                                  execution={"preflight": {"interlocks": checks,
                                                           "at": now.isoformat()}})
            audit(proposal, actor=actor or "executor", action="proposal.execute",
                  before=before, request=request)
    if error is not None:
        raise error
    return proposal


def execute_proposal(proposal_id: int, *, actor=None, request=None) -> Proposal:
    """Execute an approved proposal exactly once and record delivery and effect.

    ``actor`` None is the system executing an approval; a user needs
    ``policy.execute_proposal`` on the twin. Success (status executed, then verifying) needs
    the asset's ack; no PUBACK, no ack or a negative ack ends in failed. Raises NotPermitted,
    ProposalConflict (lost race / wrong state), ProposalExpired, StaleEvidence,
    AutomationDenied, InterlockBlocked.
    """
    if actor is not None:
        require(actor, "policy.execute_proposal", load(proposal_id).twin)
    proposal = _claim(proposal_id, actor, request)
    outcome = send_command(twin_slug=proposal.twin.slug, asset_slug=proposal.asset.slug,
                           command_id=f"proposal-{proposal.pk}", action=proposal.action,
                           parameters=proposal.parameters)
    outcome["preflight"] = (proposal.execution or {}).get("preflight")
    status = ProposalStatus.EXECUTED if outcome["acknowledged"] else ProposalStatus.FAILED
    with transaction.atomic():
        before = serialize(proposal)
        proposal = transition(proposal_id, [ProposalStatus.EXECUTING], status=status,
                              execution=outcome, executed_at=timezone.now())
        audit(proposal, actor=actor or "executor", action=f"proposal.{status}", before=before,
              reason=f"delivery: {outcome['delivery']['detail']}; effect: "
                     f"{outcome['effect']['detail'] or outcome['effect']['status']}",
              request=request)
        if status == ProposalStatus.EXECUTED:
            proposal = start_verification(proposal, request=request)
    return proposal


def _claim_rollback(proposal_id: int, actor, reason: str, request) -> tuple[Proposal, list]:
    now, error = timezone.now(), None
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if proposal.status not in ROLLBACK_FROM or proposal.rollback_started_at is not None:
            raise ProposalConflict(f"proposal {proposal_id} is {proposal.status}; rollback "
                                   f"needs {'/'.join(ROLLBACK_FROM)}, once")
        if not proposal.rollback_action:
            audit(proposal, actor=actor or "verifier", action="alert.rollback_unavailable",
                  reason=f"{proposal.action} has no rollback action: {reason}", request=request)
            error = NoRollback(f"{proposal.action} has no rollback action")
        else:
            checks, error = _interlocked(proposal, proposal.rollback_action, actor, now, request)
        if error is None:
            before = serialize(proposal)
            proposal = update(proposal_id, rollback_started_at=now)
            audit(proposal, actor=actor or "verifier", action="proposal.rollback_start",
                  before=before, reason=reason, request=request)
    if error is not None:
        raise error
    return proposal, checks


def rollback_proposal(proposal_id: int, *, actor=None, reason: str, request=None) -> Proposal:
    """Send the stored rollback action of an executed proposal, once; rolled_back on ack.

    ``actor`` None is the verifier after a breach; a user needs ``policy.rollback_proposal``
    on the twin. The claim (``rollback_started_at`` set under the row lock) commits before the
    command is sent, so two rollbacks never both publish. An unacknowledged rollback ends in
    failed with an ``alert.rollback_failed`` audit entry. Raises NotPermitted,
    ProposalConflict, NoRollback, InterlockBlocked.
    """
    if actor is not None:
        require(actor, "policy.rollback_proposal", load(proposal_id).twin)
    proposal, checks = _claim_rollback(proposal_id, actor, reason, request)
    outcome = send_command(twin_slug=proposal.twin.slug, asset_slug=proposal.asset.slug,
                           command_id=f"proposal-{proposal.pk}-rollback",
                           action=proposal.rollback_action, parameters=proposal.parameters)
    outcome["preflight"] = {"interlocks": checks}
    ok = outcome["acknowledged"]
    status = ProposalStatus.ROLLED_BACK if ok else ProposalStatus.FAILED
    with transaction.atomic():
        before = serialize(proposal)
        proposal = transition(proposal_id, ROLLBACK_FROM, status=status, rollback=outcome)
        audit(proposal, actor=actor or "verifier",
              action="proposal.rolled_back" if ok else "alert.rollback_failed", before=before,
              reason=reason if ok else f"rollback not acknowledged: {outcome['effect']['detail']}",
              request=request)
    return proposal
