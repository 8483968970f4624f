"""Approvals: four eyes, two approvers for CRITICAL, expiry, stale evidence, re-simulation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy import services
from policy.choices import ProposalStatus
from policy.errors import (
    NotPermitted,
    ProposalConflict,
    ProposalExpired,
    SelfApproval,
    StaleEvidence,
)
from policy.models import Approval, Proposal
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_execution(monkeypatch):
    """Execution is covered in test_execution; here only what approval enqueues counts."""
    queued: list[int] = []
    monkeypatch.setattr("policy.services.approvals.enqueue_execution", queued.append)
    return queued


def approve(proposal, user, capture):
    with capture(execute=True):
        return services.approve_proposal(proposal.pk, actor=user)


def test_a_supervisor_approval_approves_and_enqueues_execution_once(
        trusted, pump, users, no_execution, django_capture_on_commit_callbacks):
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    approved = approve(proposal, users["supervisor"], django_capture_on_commit_callbacks)
    assert approved.status == ProposalStatus.APPROVED
    assert approved.decided_by == users["supervisor"]
    assert no_execution == [proposal.pk]
    assert Approval.objects.get(proposal=proposal).role == "supervisor"
    assert list(AuditEntry.objects.filter(resource_type="proposal").values_list(
        "action", flat=True)) == ["proposal.approve"]


def test_the_proposer_may_not_approve_its_own_proposal(trusted, pump, users):
    proposal = factories.proposal(pump, proposed_by=users["supervisor"])
    with pytest.raises(SelfApproval):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    assert not Approval.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "agent", "executor", "outsider"])
def test_only_supervisors_and_admins_may_approve(trusted, pump, users, role):
    proposal = factories.proposal(pump)
    with pytest.raises(NotPermitted):
        services.approve_proposal(proposal.pk, actor=users[role])
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.PENDING_APPROVAL


def test_critical_needs_two_distinct_approvers(
        trusted, pump, users, second_supervisor, no_execution,
        django_capture_on_commit_callbacks):
    """GIVEN an emergency stop, WHEN one supervisor approves (twice), THEN it still waits;
    WHEN a second supervisor approves, THEN it is approved and enqueued once."""
    proposal = factories.proposal(pump, action="emergency_stop", risk="CRITICAL",
                                  approvals_required=2, proposed_by=users["agent"])
    first = approve(proposal, users["supervisor"], django_capture_on_commit_callbacks)
    assert first.status == ProposalStatus.PENDING_APPROVAL
    with pytest.raises(ProposalConflict, match="already approved"):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    assert no_execution == []
    second = approve(proposal, second_supervisor, django_capture_on_commit_callbacks)
    assert second.status == ProposalStatus.APPROVED
    assert no_execution == [proposal.pk]
    assert AuditEntry.objects.get(action="proposal.approval_recorded").reason == \
        "1 of 2 approvals"


def test_an_expired_proposal_cannot_be_approved(trusted, pump, users):
    proposal = factories.proposal(pump, expires_in_s=-1)
    with pytest.raises(ProposalExpired):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.EXPIRED
    assert AuditEntry.objects.filter(action="proposal.expire").count() == 1


def test_the_beat_task_expires_lapsed_pending_and_approved_proposals(trusted, pump):
    from policy.tasks import expire_proposals

    lapsed = factories.proposal(pump, expires_in_s=-1)
    lapsed_approved = factories.proposal(pump, status=ProposalStatus.APPROVED, expires_in_s=-1)
    fresh = factories.proposal(pump)
    executed = factories.proposal(pump, status=ProposalStatus.EXECUTED, expires_in_s=-1)
    assert expire_proposals.delay().get() == 2
    statuses = dict(Proposal.objects.values_list("pk", "status"))
    assert statuses == {lapsed.pk: "expired", lapsed_approved.pk: "expired",
                        fresh.pk: "pending_approval", executed.pk: "executed"}


def test_approval_expiry_follows_the_risk_levels_ttl(trusted, pump, users, signing_key,
                                                     django_capture_on_commit_callbacks):
    factories.signed_policy(pump.twin, signing_key,
                            approvals={"MEDIUM": {"approvers": 1, "ttl_s": 120}})
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    approved = approve(proposal, users["supervisor"], django_capture_on_commit_callbacks)
    approval = Approval.objects.get(proposal=proposal)
    assert approval.expires_at - approval.created_at == timedelta(seconds=120)
    assert approved.expires_at == approval.expires_at


def test_drifted_evidence_marks_the_proposal_stale_and_refuses_approval(trusted, pump, users):
    """GIVEN a proposal decided at 125 L/min (tolerance 4 σ = 4 L/min), WHEN the flow reads
    110 at approval time, THEN it is marked stale, audited, and not approved."""
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    factories.reading(pump, {"Temperature": 89.0, "Volume Flow RateRMS": 110.0,
                             "Pressure": 1.0})
    with pytest.raises(StaleEvidence, match="Volume Flow RateRMS"):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL and proposal.is_stale
    assert AuditEntry.objects.get(action="proposal.stale").resource_id == str(proposal.pk)
    with pytest.raises(StaleEvidence):  # and stays refused even if the state came back
        factories.reading(pump)
        services.approve_proposal(proposal.pk, actor=users["supervisor"])


def test_a_proposal_without_recorded_evidence_cannot_be_approved(trusted, pump, users):
    proposal = factories.proposal(pump)
    Proposal.objects.filter(pk=proposal.pk).update(evidence={})
    with pytest.raises(StaleEvidence):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])


def test_noise_within_tolerance_is_not_drift(trusted, pump, users,
                                             django_capture_on_commit_callbacks):
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    factories.reading(pump, {"Temperature": 89.5, "Volume Flow RateRMS": 127.0,
                             "Pressure": 1.001})
    approved = approve(proposal, users["supervisor"], django_capture_on_commit_callbacks)
    assert approved.status == ProposalStatus.APPROVED


def test_re_simulation_clears_staleness_and_voids_earlier_approvals(
        trusted, pump, users, second_supervisor, monkeypatch, signing_key,
        django_capture_on_commit_callbacks):
    """GIVEN a CRITICAL proposal with one approval that went stale, WHEN an agent
    re-simulates it on the new state, THEN the evidence is fresh, the old approval is void and
    two new approvals are needed again."""
    factories.signed_policy(pump.twin, signing_key, thresholds={"approval": 0.3})
    proposal = factories.proposal(pump, action="emergency_stop", risk="CRITICAL",
                                  approvals_required=2, proposed_by=users["agent"])
    approve(proposal, users["supervisor"], django_capture_on_commit_callbacks)
    shifted = {"Temperature": 89.0, "Volume Flow RateRMS": 110.0, "Pressure": 1.0}
    factories.reading(pump, shifted)
    with pytest.raises(StaleEvidence):
        services.approve_proposal(proposal.pk, actor=second_supervisor)
    fresh_run = factories.simulation(pump)
    monkeypatch.setattr("policy.services.proposals.run_what_if", lambda **kw: fresh_run)
    redone = services.resimulate_proposal(proposal.pk, actor=users["agent"])
    assert redone.is_stale is False
    assert redone.simulation == fresh_run
    assert redone.evidence["state"]["Volume Flow RateRMS"]["value"] == 110.0
    assert redone.status == ProposalStatus.PENDING_APPROVAL
    assert Approval.objects.get(proposal=proposal).invalidated_at is not None
    again = approve(redone, second_supervisor, django_capture_on_commit_callbacks)
    assert again.status == ProposalStatus.PENDING_APPROVAL  # the void approval does not count
    assert AuditEntry.objects.filter(action="proposal.resimulate").count() == 1


def test_only_proposers_may_re_simulate(trusted, pump, users):
    proposal = factories.proposal(pump)
    with pytest.raises(NotPermitted):
        services.resimulate_proposal(proposal.pk, actor=users["executor"])


def test_a_rejection_needs_a_reason(trusted, pump, users):
    proposal = factories.proposal(pump)
    with pytest.raises(ValueError, match="reason"):
        services.reject_proposal(proposal.pk, actor=users["supervisor"], reason="  ")
    rejected = services.reject_proposal(proposal.pk, actor=users["supervisor"],
                                        reason="flow already recovering")
    assert rejected.status == ProposalStatus.REJECTED
    assert AuditEntry.objects.get(action="proposal.reject").reason == "flow already recovering"


def test_an_approved_proposal_can_still_be_vetoed_before_it_runs(trusted, pump, users):
    proposal = factories.proposal(pump, status=ProposalStatus.APPROVED)
    vetoed = services.reject_proposal(proposal.pk, actor=users["supervisor"], reason="veto")
    assert vetoed.status == ProposalStatus.REJECTED


def test_a_decided_proposal_cannot_be_approved_again(trusted, pump, users):
    proposal = factories.proposal(pump, status=ProposalStatus.REJECTED)
    with pytest.raises(ProposalConflict):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])


def test_an_anomaly_gets_one_proposal_and_a_busy_asset_none(trusted, pump, monkeypatch):
    """GIVEN a critical anomaly, WHEN OpsTwin responds twice, THEN it proposes once; and a
    second anomaly on the same asset gets nothing while another proposal is open."""
    from django.utils import timezone

    from telemetry.models import Anomaly

    monkeypatch.setattr("policy.services.proposals.run_what_if",
                        lambda *, asset, **kw: factories.simulation(asset))
    now = timezone.now()
    fields = {"asset": pump, "metric": "Volume Flow RateRMS", "detector": "zscore",
              "kind": "drift", "severity": "critical", "score": 1.0, "started_at": now,
              "last_seen_at": now, "features": {"value": 100.0, "baseline_mean": 125.0}}
    first, second = Anomaly.objects.create(**fields), Anomaly.objects.create(**fields)
    proposal = services.respond_to_anomaly(first.pk)
    assert proposal.action == "open_valve" and proposal.anomaly == first
    assert proposal.status == ProposalStatus.NEEDS_ANALYSIS  # one reading: low data quality
    assert services.respond_to_anomaly(first.pk) is None
    factories.proposal(pump)  # an open (pending) proposal on the asset
    assert services.respond_to_anomaly(second.pk) is None
    assert Proposal.objects.count() == 2
