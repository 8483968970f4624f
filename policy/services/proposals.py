"""Proposing: score, decide and store a proposal; the dry run; re-simulating stale evidence."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policy import confidence as conf
from policy import interlocks
from policy.actions import candidate_action
from policy.catalogue import declared_effect, offered_actions, type_risk
from policy.choices import Decision, ProposalStatus
from policy.decision import DecisionResult, decide
from policy.errors import ProposalConflict
from policy.models import Approval, Proposal
from policy.services.common import (
    audit,
    load,
    lock_asset,
    notify_on_commit,
    require,
    serialize,
    update,
)
from policy.services.documents import active_policy
from policy.state import evidence_snapshot, newest_event_ts
from policy.transitions import VERBS
from policy.trust import ActivePolicy
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
                 ProposalStatus.EXECUTING, ProposalStatus.VERIFYING]
RESIMULATABLE = list(VERBS["resimulate"].from_)


@dataclass
class Assessment:
    """Everything a decision rests on: the policy, the confidence, the verdict, the evidence."""

    policy: ActivePolicy
    breakdown: dict
    confidence: float
    result: DecisionResult
    evidence: dict
    rollback_action: str

    def fields(self, now: datetime) -> dict:
        """Proposal columns set from this assessment (status and expiry included)."""
        status = STATUS_FOR[self.result.decision]
        waits = status in (ProposalStatus.PENDING_APPROVAL, ProposalStatus.APPROVED)
        return {
            "risk_level": self.result.risk_level, "confidence": self.confidence,
            "confidence_breakdown": self.breakdown | {"weights": conf.WEIGHTS},
            "decision": self.result.decision, "decision_trace": self.result.trace,
            "status": status, "approvals_required": self.result.approvals_required,
            "expires_at": now + timedelta(seconds=self.result.ttl_s) if waits else None,
            "decided_at": now if self.result.decision == Decision.AUTO_EXECUTE else None,
            "policy_version": self.policy.version, "policy_trusted": self.policy.trusted,
            "evidence": self.evidence, "rollback_action": self.rollback_action,
        }


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


def _moves(run: SimulationRun | None, anomaly: Anomaly | None) -> tuple[str, bool] | None:
    """(the anomaly's metric, whether the what-if ``run`` moves it); None without an anomaly
    or a what-if that recorded what it moves (``request["moved"]``)."""
    moved = (run.request or {}).get("moved") if run is not None else None
    if anomaly is None or moved is None:
        return None
    return anomaly.metric, anomaly.metric in moved


def assess_action(*, asset: Asset, action: str, actor, anomaly: Anomaly | None,
                  simulation: SimulationRun | None, now: datetime) -> Assessment:
    """Score and decide ``action`` on ``asset`` now. Reads only (plus the policy high-water)."""
    policy = active_policy(asset.twin)
    breakdown = _components(asset, action, simulation, anomaly)
    confidence = conf.combine(breakdown)
    checks = interlocks.evaluate(policy.rules.interlocks, asset=asset, action=action, now=now)
    result = decide(action=action, proposer=actor, twin=asset.twin, confidence=confidence,
                    p_breach=breach_probability(simulation) if simulation else None,
                    policy=policy, interlocks=checks, type_risk=type_risk(asset, action),
                    moves=_moves(simulation, anomaly))
    evidence = evidence_snapshot(asset, simulation, sigmas=policy.rules.tolerance_sigmas,
                                 now=now)
    return Assessment(policy, breakdown, confidence, result, evidence,
                      policy.rules.rollback_of(action))


def _busy(asset: Asset, anomaly: Anomaly | None) -> bool:
    return Proposal.objects.filter(asset=asset, status__in=OPEN_STATUSES).exists() or (
        anomaly is not None and Proposal.objects.filter(anomaly=anomaly).exists())


def propose(
    *, asset: Asset, action: str, parameters: dict, actor=None, anomaly: Anomaly | None = None,
    simulation: SimulationRun | None = None, request=None, only_if_idle: bool = False,
) -> Proposal | None:
    """Create a proposal, score its confidence, let the policy decide, and act on the decision.

    ``actor`` None means OpsTwin itself proposed it. An auto-executed proposal is stored as
    approved and its execution is enqueued after commit. ``only_if_idle`` (anomaly responses)
    returns None instead when the asset already has an open proposal or the anomaly one: the
    check runs under a per-asset advisory lock, so two workers cannot both propose.
    """
    now = timezone.now()
    assessment = assess_action(asset=asset, action=action, actor=actor, anomaly=anomaly,
                               simulation=simulation, now=now)
    with transaction.atomic():
        if only_if_idle:
            lock_asset(asset.pk)
            if _busy(asset, anomaly):
                return None
        proposal = Proposal.objects.create(
            twin=asset.twin, asset=asset, anomaly=anomaly, simulation=simulation, action=action,
            parameters=parameters, proposed_by=actor, **assessment.fields(now))
        audit(proposal, actor=actor or "policy", action="proposal.create", operation="created",
              request=request)
        notify_on_commit(proposal)
        if proposal.decision == Decision.AUTO_EXECUTE:
            transaction.on_commit(lambda: enqueue_execution(proposal.pk))
    return proposal


def default_metrics(asset: Asset, anomaly: Anomaly | None) -> list[str]:
    """Metrics a what-if is judged on: the anomaly's metric, else every declared metric."""
    return [anomaly.metric] if anomaly else list(asset.metric_names)


def respond_to_anomaly(anomaly_id: int) -> Proposal | None:
    """Simulate the candidate action for a high/critical anomaly and propose it.

    Skips (returns None) when the anomaly already has a proposal or the asset already has an
    open one (pending, approved, executing or verifying): one action in flight per asset.
    """
    anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
    if _busy(anomaly.asset, anomaly):
        return None
    features = anomaly.features
    action, parameters = candidate_action(anomaly.metric, anomaly.severity,
                                          features.get("value", 0.0),
                                          features.get("baseline_mean", 0.0),
                                          kind=anomaly.asset.kind)
    if action not in offered_actions(anomaly.asset):
        log.info("no automatic proposal for anomaly %s: %s is not offered on asset type %s",
                 anomaly.pk, action, anomaly.asset.asset_type)
        return None
    run = run_what_if(asset=anomaly.asset, action=action, parameters=parameters,
                      metrics=[anomaly.metric], at=anomaly.last_seen_at, anomaly=anomaly,
                      effect=declared_effect(anomaly.asset, action))
    return propose(asset=anomaly.asset, action=action, parameters=parameters, anomaly=anomaly,
                   simulation=run, only_if_idle=True)


def propose_action(*, asset: Asset, action: str, parameters: dict, actor,
                   anomaly: Anomaly | None = None, metrics: list[str] | None = None,
                   request=None) -> Proposal:
    """A human or agent proposes ``action``: simulate it on the current state, then propose.

    Raises NotPermitted unless ``actor`` may propose on the twin (``policy.add_proposal``).
    """
    require(actor, "policy.add_proposal", asset.twin)
    run = run_what_if(asset=asset, action=action, parameters=parameters,
                      metrics=metrics or default_metrics(asset, anomaly),
                      at=newest_event_ts(asset) or timezone.now(), anomaly=anomaly,
                      effect=declared_effect(asset, action))
    return propose(asset=asset, action=action, parameters=parameters, actor=actor,
                   anomaly=anomaly, simulation=run, request=request)


def _simulation_json(run: SimulationRun) -> dict:
    result = run.result or {}
    return {"status": run.status, "error": run.error, "p_breach": breach_probability(run),
            "converged": result.get("converged"), "n_samples": result.get("n_samples"),
            "metrics": {m: {k: s.get(k) for k in ("p5", "p50", "p95")}
                        for m, s in (result.get("metrics") or {}).items()},
            "constraints": result.get("constraints", [])}


def evaluate_proposal(*, asset: Asset, action: str, parameters: dict, actor,
                      anomaly: Anomaly | None = None, metrics: list[str] | None = None) -> dict:
    """Dry run: what would happen if ``actor`` proposed ``action`` now. Changes nothing.

    Runs the same simulation, scoring and decision as a real proposal inside a transaction
    that is always rolled back, so no proposal, simulation run, audit entry, change event or
    high-water mark survives (on-commit work is discarded with it). Returns decision.v1 plus
    the status the proposal would get, the evidence and the simulated percentiles.
    """
    now = timezone.now()
    with transaction.atomic():
        run = run_what_if(asset=asset, action=action, parameters=parameters,
                          metrics=metrics or default_metrics(asset, anomaly),
                          at=newest_event_ts(asset) or now, anomaly=anomaly,
                          effect=declared_effect(asset, action))
        a = assess_action(asset=asset, action=action, actor=actor, anomaly=anomaly,
                          simulation=run, now=now)
        outcome = {
            "dry_run": True, "twin": asset.twin.slug, "asset": asset.slug, "action": action,
            "parameters": parameters, "decision": a.result.decision,
            "status_if_proposed": STATUS_FOR[a.result.decision], "risk_level": a.result.risk_level,
            "approvals_required": a.result.approvals_required, "ttl_s": a.result.ttl_s,
            "confidence": a.confidence, "confidence_breakdown": a.breakdown,
            "decision_trace": a.result.trace, "policy": a.policy.summary(),
            "evidence": a.evidence, "rollback_action": a.rollback_action,
            "simulation": _simulation_json(run),
        }
        transaction.set_rollback(True)
    return outcome


def resimulate_proposal(proposal_id: int, *, actor=None, request=None) -> Proposal:
    """Re-simulate a proposal on the asset's current state and decide it again.

    For stale evidence (or a proposal waiting for analysis). Voids every approval given so far
    (it was given on other evidence), records fresh evidence, clears ``stale_at`` and sets the
    status from the new decision. Raises NotPermitted (``policy.add_proposal`` on the twin),
    ProposalConflict (not pending/approved/needs_analysis, or changed meanwhile).
    """
    proposal = load(proposal_id)
    if actor is not None:
        require(actor, VERBS["resimulate"].permission, proposal.twin)
    if proposal.status not in RESIMULATABLE:
        raise ProposalConflict(f"proposal {proposal_id} is {proposal.status}; only "
                               f"{'/'.join(RESIMULATABLE)} can be re-simulated")
    metrics = (proposal.simulation.request.get("metrics") if proposal.simulation else None) \
        or default_metrics(proposal.asset, proposal.anomaly)
    run = run_what_if(asset=proposal.asset, action=proposal.action,
                      parameters=proposal.parameters, metrics=metrics,
                      at=newest_event_ts(proposal.asset) or timezone.now(),
                      anomaly=proposal.anomaly,
                      effect=declared_effect(proposal.asset, proposal.action))
    now = timezone.now()
    a = assess_action(asset=proposal.asset, action=proposal.action, actor=proposal.proposed_by,
                      anomaly=proposal.anomaly, simulation=run, now=now)
    with transaction.atomic():
        locked = load(proposal_id, lock=True)
        if locked.revision != proposal.revision:
            raise ProposalConflict(f"proposal {proposal_id} changed while re-simulating")
        before = serialize(locked)
        Approval.objects.filter(proposal=locked, invalidated_at__isnull=True).update(
            invalidated_at=now)
        proposal = update(proposal_id, simulation=run, stale_at=None, decided_by=None,
                          **a.fields(now))
        audit(proposal, actor=actor or "policy", action="proposal.resimulate", before=before,
              request=request, reason="fresh evidence; earlier approvals void")
        notify_on_commit(proposal)
        if proposal.decision == Decision.AUTO_EXECUTE:
            transaction.on_commit(lambda: enqueue_execution(proposal_id))
    return proposal


def enqueue_execution(proposal_id: int) -> None:
    """Hand an approved proposal to the ``actions`` queue (called on commit)."""
    from policy.tasks import execute_proposal as execute_task

    execute_task.delay(proposal_id)
