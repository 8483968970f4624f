"""Executing an approved proposal exactly once, and rolling an executed one back.

Two steps, each its own transaction. The claim (approved → executing, under the proposal's
row lock, after every pre-flight check passed) commits first: a second caller (an executor
clicking twice) finds "executing" and gets ProposalConflict. Pre-flight, in order: not
expired; the approvals still count (human path) or the policy is still trusted (automatic
path); the evidence has not drifted; every interlock guarding the action passes now. A failed
check is recorded (audited) and refused; the proposal stays approved until it expires or is
re-simulated. Completing sends the command (``policy.services.attempts``: a lease per attempt,
one stable command id) and records the outcome.

Web requests claim and answer 202 (``start_execution`` / ``start_rollback``: the completion is
enqueued on the ``actions`` queue on commit); the automatic path and the verifier run both
steps in one call (``execute_proposal`` / ``rollback_proposal``). A process that dies between
the steps leaves the command in flight; ``recover_commands`` (beat, the demo's sweeper) sends
it again with the same command id once its lease lapsed, or gives up: failed, audited.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from policy import interlocks
from policy.choices import Decision, ProposalStatus
from policy.command_publisher import send_command
from policy.errors import AutomationDenied, InterlockBlocked, NoRollback, ProposalConflict
from policy.models import Proposal
from policy.services.approvals import _blocker, expire, live_approvals
from policy.services.attempts import (
    EXECUTION,
    ROLLBACK,
    ROLLBACK_FROM,
    Command,
    current,
    fault_point,
    final_state,
    stuck,
    take_attempt,
)
from policy.services.common import (
    audit,
    load,
    notify_on_commit,
    require,
    serialize,
    transition,
    update,
)
from policy.services.documents import active_policy
from policy.services.verification import start_verification
from policy.transitions import VERBS
from twins.models import Asset
from twins.state import set_desired

Then = Callable[[int], None] | None


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
            notify_on_commit(back)
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


def claim_execution(proposal_id: int, *, actor=None, request=None, then: Then = None) -> Proposal:
    """approved → executing after the pre-flight checks; commits before anything is sent.

    ``execution`` becomes the in-flight state ``{"command_id", "preflight", "claimed_at",
    "attempts": 0, "lease_until": null}``; ``then(proposal_id)`` runs on commit (the web path
    enqueues the completion). ``actor`` None is the system; a user needs
    ``policy.execute_proposal`` on the twin. Raises NotPermitted, ProposalConflict (lost race
    / wrong state / approvals lapsed), ProposalExpired, StaleEvidence, AutomationDenied,
    InterlockBlocked; refusals are audited and committed before they are raised.
    """
    if actor is not None:
        require(actor, VERBS["execute"].permission, load(proposal_id).twin)
    now, error = timezone.now(), None
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if proposal.status not in VERBS["execute"].from_:
            raise ProposalConflict(f"proposal {proposal_id} is {proposal.status}, expected "
                                   f"{'/'.join(VERBS['execute'].from_)}")
        error = _blocker(proposal, actor, now, request) or _authorised(proposal, now, request)
        if error is None:
            checks, error = _interlocked(proposal, proposal.action, actor, now, request)
        if error is None:
            before = serialize(proposal)
            preflight = {"interlocks": checks, "at": now.isoformat()}
            proposal = transition(proposal_id, [ProposalStatus.APPROVED],
                                  status=ProposalStatus.EXECUTING,
                                  execution=EXECUTION.claim_state(proposal, now,
                                                                  preflight=preflight))
            audit(proposal, actor=actor or "executor", action="proposal.execute",
                  before=before, request=request)
            if then is not None:
                transaction.on_commit(lambda: then(proposal_id))
    if error is not None:
        raise error
    return proposal


def _send(proposal: Proposal, kind: Command, state: dict, action: str) -> dict:
    fault_point("after_claim", state)
    outcome = send_command(twin_slug=proposal.twin.slug, asset_slug=proposal.asset.slug,
                           command_id=state["command_id"], action=action,
                           parameters=proposal.parameters, expires_at=state["lease_until"])
    fault_point("after_send", state)
    return outcome


def complete_execution(proposal_id: int, *, actor=None, request=None,
                       recovering: bool = False) -> Proposal:
    """Send an executing proposal's command and record delivery and effect.

    Success (status executed, then verifying) needs the asset's ack; no PUBACK, no ack or a
    negative ack ends in failed. A no-op (returns the proposal as it is) when it is not
    executing or another attempt holds a live lease; ``recovering`` (the sweeper) also waits
    until the claim is older than one attempt may take. Safe to call repeatedly and
    concurrently: the effect happens once (see ``policy.services.attempts``).
    """
    proposal, state = take_attempt(proposal_id, EXECUTION, recovering=recovering, actor=actor)
    if state is None:
        return proposal
    outcome = _send(proposal, EXECUTION, state, proposal.action)
    status = ProposalStatus.EXECUTED if outcome["acknowledged"] else ProposalStatus.FAILED
    with transaction.atomic():
        locked = load(proposal_id, lock=True)
        if not (outcome["acknowledged"] and EXECUTION.in_flight(locked)) and \
                not current(locked, EXECUTION, state):
            return locked  # recorded meanwhile, or a newer attempt owns the failure
        lock_asset_row(locked)
        before = serialize(locked)
        proposal = transition(proposal_id, [ProposalStatus.EXECUTING], status=status,
                              execution=final_state(state, outcome),
                              executed_at=timezone.now())
        audit(proposal, actor=actor or "executor", action=f"proposal.{status}", before=before,
              reason=f"delivery: {outcome['delivery']['detail']}; effect: "
                     f"{outcome['effect']['detail'] or outcome['effect']['status']}",
              request=request)
        notify_on_commit(proposal)
        if status == ProposalStatus.EXECUTED:
            proposal = start_verification(proposal, request=request)
            plan = proposal.verification or {}
            expected = {plan["metric"]: plan["band"]} if plan.get("band") else {}
            record_desired(proposal, proposal.action, expected=expected,
                           converge_by=proposal.verify_until, actor=actor, request=request)
    return proposal


def lock_asset_row(proposal: Proposal) -> None:
    """Lock the proposal's asset row before the audit chain's lock (the ledger's lock order:
    rows first), so recording its desired state cannot deadlock with an asset edit."""
    Asset.objects.select_for_update(no_key=True).filter(pk=proposal.asset_id).exists()


def record_desired(proposal: Proposal, action: str, *, expected: dict, converge_by, actor,
                   request) -> None:
    """The asset's desired state after an acknowledged command (``twins.state.set_desired``):
    the action and parameters, the proposal, and what the asset should read by when
    (``expected``: metric → [p5, p95] of the simulated band; ``{}`` after a rollback, which
    restores the state before the action)."""
    set_desired(proposal.asset, {
        "action": action, "parameters": proposal.parameters, "proposal": proposal.pk,
        "commanded_at": timezone.now().isoformat(),
        "converge_by": converge_by.isoformat() if converge_by else None,
        "expected": expected}, actor=actor or "executor",
        reason=f"proposal {proposal.pk}: {action} acknowledged", request=request)


def execute_proposal(proposal_id: int, *, actor=None, request=None) -> Proposal:
    """Claim and complete in one call (the automatic path's task; scripts and tests).

    Raises what ``claim_execution`` raises; see ``complete_execution`` for the outcome.
    """
    claim_execution(proposal_id, actor=actor, request=request)
    return complete_execution(proposal_id, actor=actor, request=request)


def start_execution(proposal_id: int, *, actor=None, request=None) -> Proposal:
    """Claim now, send later: the completion goes to the ``actions`` queue on commit.

    For web requests (answer 202 with the executing proposal); the outcome reaches clients
    through the change feed. Raises what ``claim_execution`` raises.
    """
    return claim_execution(proposal_id, actor=actor, request=request,
                           then=lambda pk: enqueue_completion(pk, EXECUTION.field))


def claim_rollback(proposal_id: int, *, actor=None, reason: str, request=None,
                   then: Then = None) -> Proposal:
    """Claim the rollback of an executed proposal once (``rollback_started_at`` set under the
    row lock, committed before anything is sent); ``rollback`` becomes the in-flight state
    with ``reason``. ``then(proposal_id)`` runs on commit. ``actor`` None is the verifier; a
    user needs ``policy.rollback_proposal`` on the twin. Raises NotPermitted,
    ProposalConflict, NoRollback, InterlockBlocked.
    """
    if actor is not None:
        require(actor, VERBS["rollback"].permission, load(proposal_id).twin)
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
            state = ROLLBACK.claim_state(proposal, now, reason=reason,
                                         preflight={"interlocks": checks, "at": now.isoformat()})
            proposal = update(proposal_id, rollback_started_at=now, rollback=state)
            audit(proposal, actor=actor or "verifier", action="proposal.rollback_start",
                  before=before, reason=reason, request=request)
            if then is not None:
                transaction.on_commit(lambda: then(proposal_id))
    if error is not None:
        raise error
    return proposal


def complete_rollback(proposal_id: int, *, actor=None, request=None,
                      recovering: bool = False) -> Proposal:
    """Send a claimed rollback's command; rolled_back on ack, else failed with an
    ``alert.rollback_failed`` audit entry. No-op rules as ``complete_execution``."""
    proposal, state = take_attempt(proposal_id, ROLLBACK, recovering=recovering, actor=actor)
    if state is None:
        return proposal
    outcome = _send(proposal, ROLLBACK, state, proposal.rollback_action)
    ok = outcome["acknowledged"]
    with transaction.atomic():
        locked = load(proposal_id, lock=True)
        if not (ok and ROLLBACK.in_flight(locked)) and not current(locked, ROLLBACK, state):
            return locked
        lock_asset_row(locked)
        before = serialize(locked)
        proposal = transition(proposal_id, ROLLBACK_FROM,
                              status=ProposalStatus.ROLLED_BACK if ok else ProposalStatus.FAILED,
                              rollback=final_state(state, outcome))
        audit(proposal, actor=actor or "verifier",
              action="proposal.rolled_back" if ok else "alert.rollback_failed", before=before,
              reason=state.get("reason", "") if ok
              else f"rollback not acknowledged: {outcome['effect']['detail']}", request=request)
        if ok:
            record_desired(proposal, proposal.rollback_action, expected={}, converge_by=None,
                           actor=actor or "verifier", request=request)
        notify_on_commit(proposal)
    return proposal


def rollback_proposal(proposal_id: int, *, actor=None, reason: str, request=None) -> Proposal:
    """Claim and complete a rollback in one call (the verifier after a breach)."""
    claim_rollback(proposal_id, actor=actor, reason=reason, request=request)
    return complete_rollback(proposal_id, actor=actor, request=request)


def start_rollback(proposal_id: int, *, actor=None, reason: str, request=None) -> Proposal:
    """Claim now; the rollback's command goes to the ``actions`` queue on commit (202)."""
    return claim_rollback(proposal_id, actor=actor, reason=reason, request=request,
                          then=lambda pk: enqueue_completion(pk, ROLLBACK.field))


def enqueue_completion(proposal_id: int, field: str) -> None:
    """Hand a claimed command to the ``actions`` queue (``field``: execution | rollback)."""
    from policy import tasks

    task = tasks.complete_execution if field == EXECUTION.field else tasks.complete_rollback
    task.delay(proposal_id)


def recover_commands(now=None) -> int:
    """Reconcile commands left in flight by a process that died: send each again with its
    command id once its lease lapsed, or record it failed after the last attempt (audited
    either way). Returns how many left the in-flight state. Beat and the demo's sweeper."""
    done = 0
    for proposal_id, kind in stuck(now or timezone.now()):
        complete = complete_execution if kind is EXECUTION else complete_rollback
        try:
            proposal = complete(proposal_id, recovering=True)
        except Proposal.DoesNotExist:  # deleted with its twin meanwhile
            continue
        done += not kind.in_flight(proposal)
    return done
