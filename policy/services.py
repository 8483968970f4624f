"""The only code that changes proposals: propose, approve, reject, execute.

Every transition is a conditional UPDATE on the expected status with a row-count check, so
two supervisors approving at once, or an executor clicking twice, change the row once and the
loser gets ``ProposalConflict``. Each transition writes its AuditEntry and ChangeEvent in the
same transaction (``policy.audit.record_change``); follow-up work is enqueued on commit.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policy import confidence as conf
from policy.actions import candidate_action
from policy.audit import record_change
from policy.choices import Decision, ProposalStatus
from policy.commands import publish_command
from policy.decision import decide
from policy.errors import NotPermitted, ProposalConflict, SelfApproval
from policy.models import Proposal
from simulation.models import SimulationRun
from simulation.services import breach_probability, run_what_if
from telemetry.models import Anomaly
from twins.models import Asset

log = logging.getLogger(__name__)
STATUS_FOR = {
    Decision.AUTO_EXECUTE: ProposalStatus.APPROVED,
    Decision.REQUIRE_APPROVAL: ProposalStatus.PENDING_APPROVAL,
    Decision.REQUIRE_ANALYSIS: ProposalStatus.NEEDS_ANALYSIS,
    Decision.REJECT: ProposalStatus.REJECTED,
}
OPEN_STATUSES = [ProposalStatus.PENDING_APPROVAL, ProposalStatus.APPROVED,
                 ProposalStatus.EXECUTING]


def serialize(proposal: Proposal) -> dict:
    """proposal.v1 of ``proposal``."""
    from policy.api.serializers import ProposalSerializer

    return dict(ProposalSerializer(proposal).data)


def _components(asset: Asset, action: str, run: SimulationRun | None, anomaly) -> dict:
    until = anomaly.last_seen_at if anomaly else timezone.now()
    window = settings.SIMULATION_CALIBRATION_WINDOW
    agreement, votes = conf.consensus(anomaly, calibration_rows=window) if anomaly else (0.0, {})
    converged = bool(run and run.result and run.result.get("converged"))
    return {
        "historical_success": conf.historical_success(action, asset.kind),
        "data_quality": conf.data_quality(asset, until=until, window=window),
        "simulation_consistency": conf.simulation_consistency(
            breach_probability(run) if run else 1.0, converged),
        "consensus": agreement,
        "detector_votes": votes,
    }


def propose(
    *, asset: Asset, action: str, parameters: dict, actor=None, anomaly: Anomaly | None = None,
    simulation: SimulationRun | None = None, request=None,
) -> Proposal:
    """Create a proposal, score its confidence, let the policy decide, and act on the decision.

    ``actor`` None means OpsTwin itself proposed it. An auto-executed proposal is stored as
    approved and its execution is enqueued after commit.
    """
    breakdown = _components(asset, action, simulation, anomaly)
    confidence = conf.combine(breakdown)
    result = decide(action=action, proposer=actor, twin=asset.twin, confidence=confidence,
                    p_breach=breach_probability(simulation) if simulation else 1.0)
    with transaction.atomic():
        proposal = Proposal.objects.create(
            twin=asset.twin, asset=asset, anomaly=anomaly, simulation=simulation, action=action,
            parameters=parameters, risk_level=result.risk_level, confidence=confidence,
            confidence_breakdown=breakdown | {"weights": conf.WEIGHTS}, decision=result.decision,
            decision_trace=result.trace, status=STATUS_FOR[result.decision], proposed_by=actor,
            decided_at=timezone.now() if result.decision == Decision.AUTO_EXECUTE else None,
        )
        record_change(actor=actor or "policy", action="proposal.create",
                      resource_type="proposal", resource_id=proposal.pk, operation="created",
                      twin=asset.twin, after=serialize(proposal), request=request)
        if result.decision == Decision.AUTO_EXECUTE:
            transaction.on_commit(lambda: _enqueue_execution(proposal.pk))
    return proposal


def respond_to_anomaly(anomaly_id: int) -> Proposal | None:
    """Simulate the candidate action for a high/critical anomaly and propose it.

    Skips (returns None) when the anomaly already has a proposal or the asset already has an
    open one (pending, approved or executing): one action in flight per asset.
    """
    anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
    if Proposal.objects.filter(anomaly=anomaly).exists() or Proposal.objects.filter(
        asset=anomaly.asset, status__in=OPEN_STATUSES
    ).exists():
        return None
    features = anomaly.features
    action, parameters = candidate_action(anomaly.metric, anomaly.severity,
                                          features.get("value", 0.0),
                                          features.get("window_mean", 0.0))
    run = run_what_if(asset=anomaly.asset, action=action, parameters=parameters,
                      metrics=[anomaly.metric], at=anomaly.last_seen_at, anomaly=anomaly)
    return propose(asset=anomaly.asset, action=action, parameters=parameters, anomaly=anomaly,
                   simulation=run)


def _transition(proposal_id: int, expected: list[str], **changes) -> Proposal:
    """Conditional UPDATE from one of ``expected`` statuses; raises ProposalConflict if lost."""
    updated = Proposal.objects.filter(pk=proposal_id, status__in=expected).update(**changes)
    if updated != 1:
        current = Proposal.objects.filter(pk=proposal_id).values_list("status", flat=True).first()
        wanted = "/".join(expected)
        raise ProposalConflict(f"proposal {proposal_id} is {current}, expected {wanted}")
    return Proposal.objects.select_related("twin", "asset", "proposed_by").get(pk=proposal_id)


def _require(actor, perm: str, proposal: Proposal) -> None:
    if not actor.has_perm(perm):
        raise NotPermitted(f"{actor.get_username()} lacks {perm}")
    if not (actor.has_perm("twins.operate_twin") or
            actor.has_perm("twins.operate_twin", proposal.twin)):
        raise NotPermitted(f"{actor.get_username()} may not operate twin {proposal.twin.slug}")


def approve_proposal(proposal_id: int, *, actor, request=None) -> Proposal:
    """Approve a pending proposal and enqueue its execution after commit.

    Raises NotPermitted (no approve permission or twin out of scope), SelfApproval (the
    proposer approving its own proposal) or ProposalConflict (not pending any more: e.g. a
    concurrent approval won the race).
    """
    proposal = Proposal.objects.select_related("twin").get(pk=proposal_id)
    _require(actor, "policy.approve_proposal", proposal)
    if proposal.proposed_by_id == actor.pk:
        raise SelfApproval(f"{actor.get_username()} proposed #{proposal_id}")
    with transaction.atomic():
        before = serialize(proposal)
        proposal = _transition(proposal_id, [ProposalStatus.PENDING_APPROVAL],
                               status=ProposalStatus.APPROVED, decided_by=actor,
                               decided_at=timezone.now())
        record_change(actor=actor, action="proposal.approve", resource_type="proposal",
                      resource_id=proposal_id, operation="updated", twin=proposal.twin,
                      before=before, after=serialize(proposal), request=request)
        transaction.on_commit(lambda: _enqueue_execution(proposal_id))
    return proposal


def reject_proposal(proposal_id: int, *, actor, reason: str, request=None) -> Proposal:
    """Reject a pending proposal with a reason (required, non-blank).

    Raises ValueError for a blank reason, NotPermitted, or ProposalConflict as for approval.
    """
    if not reason or not reason.strip():
        raise ValueError("a reason is required to reject a proposal")
    proposal = Proposal.objects.select_related("twin").get(pk=proposal_id)
    _require(actor, "policy.approve_proposal", proposal)
    with transaction.atomic():
        before = serialize(proposal)
        proposal = _transition(proposal_id, [ProposalStatus.PENDING_APPROVAL],
                               status=ProposalStatus.REJECTED, decided_by=actor,
                               decided_at=timezone.now(), reason=reason.strip())
        record_change(actor=actor, action="proposal.reject", resource_type="proposal",
                      resource_id=proposal_id, operation="updated", twin=proposal.twin,
                      before=before, after=serialize(proposal), reason=reason.strip(),
                      request=request)
    return proposal


def execute_proposal(proposal_id: int, *, actor=None, request=None) -> Proposal:
    """Execute an approved proposal exactly once: claim it, publish the command, record it.

    The claim (approved → executing) is a conditional UPDATE committed before the command is
    sent, so a second caller gets ProposalConflict and never publishes. ``actor`` None is the
    system executing an approval; a user needs ``policy.execute_proposal`` on the twin.
    """
    if actor is not None:
        _require(actor, "policy.execute_proposal", Proposal.objects.get(pk=proposal_id))
    with transaction.atomic():
        proposal = _transition(proposal_id, [ProposalStatus.APPROVED],
                               status=ProposalStatus.EXECUTING)
        record_change(actor=actor or "executor", action="proposal.execute",
                      resource_type="proposal", resource_id=proposal_id, operation="updated",
                      twin=proposal.twin, after=serialize(proposal), request=request)
    outcome = publish_command(proposal)
    status = ProposalStatus.EXECUTED if outcome["delivered"] else ProposalStatus.FAILED
    with transaction.atomic():
        proposal = _transition(proposal_id, [ProposalStatus.EXECUTING], status=status,
                               execution=outcome, executed_at=timezone.now())
        record_change(actor=actor or "executor", action=f"proposal.{status}",
                      resource_type="proposal", resource_id=proposal_id, operation="updated",
                      twin=proposal.twin, after=serialize(proposal), request=request)
    return proposal


def _enqueue_execution(proposal_id: int) -> None:
    from policy.tasks import execute_proposal as execute_task

    execute_task.delay(proposal_id)
