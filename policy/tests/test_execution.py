"""Execution over real MQTT: delivery (PUBACK) and effect (the asset's ack), and the checks
that run again at the moment of execution."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from policy import services
from policy.choices import Decision, ProposalStatus
from policy.errors import (
    AutomationDenied,
    InterlockBlocked,
    NotPermitted,
    ProposalConflict,
    StaleEvidence,
)
from policy.models import Approval, Proposal
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db
TEMP = {"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95, "max_age_s": 60,
        "guards": ["reduce_load"]}


def proposal_actions(proposal) -> list[str]:
    return list(AuditEntry.objects.filter(resource_type="proposal", resource_id=str(proposal.pk))
                .values_list("action", flat=True))


def test_an_approval_executes_the_command_and_the_asset_acknowledges_it(
        trusted, pump, users, device, django_capture_on_commit_callbacks):
    """GIVEN a pending proposal and the simulated asset, WHEN a supervisor approves, THEN the
    command is delivered (PUBACK) and acknowledged (asset ack), and verification starts."""
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.VERIFYING
    assert proposal.execution["delivery"]["ok"] is True
    assert proposal.execution["effect"] == proposal.execution["effect"] | {
        "ok": True, "status": "ok", "detail": "reduce_load applied"}
    assert [c["ack"]["command_id"] for c in device.received] == [f"proposal-{proposal.pk}"]
    assert proposal_actions(proposal) == ["proposal.approve", "proposal.execute",
                                          "proposal.executed", "proposal.verifying"]


def test_a_delivered_command_without_an_ack_fails(trusted, pump, users, mqtt_url, prefix,
                                                  settings):
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 0.5
    proposal = factories.approved(pump, users["supervisor"])
    failed = services.execute_proposal(proposal.pk)
    assert failed.status == ProposalStatus.FAILED
    assert failed.execution["delivery"]["ok"] is True
    assert failed.execution["effect"]["status"] == "timeout"


def test_a_command_the_asset_rejects_fails(trusted, pump, users, device):
    proposal = factories.approved(pump, users["supervisor"], action="spin_backwards")
    failed = services.execute_proposal(proposal.pk)
    assert failed.status == ProposalStatus.FAILED
    assert failed.execution["effect"]["status"] == "rejected"
    assert failed.execution["delivery"]["ok"] is True


def test_execution_is_recorded_as_failed_when_no_broker_answers(trusted, pump, users, settings):
    settings.MQTT_URL = "mqtt://127.0.0.1:9"  # nothing listens on the discard port
    proposal = factories.approved(pump, users["supervisor"])
    failed = services.execute_proposal(proposal.pk)
    assert failed.status == ProposalStatus.FAILED
    assert "unreachable" in failed.execution["delivery"]["detail"]


def test_an_executor_executes_once_and_a_second_click_is_refused(
        trusted, pump, users, device):
    proposal = factories.approved(pump, users["supervisor"])
    done = services.execute_proposal(proposal.pk, actor=users["executor"])
    assert done.status == ProposalStatus.VERIFYING
    with pytest.raises(ProposalConflict):
        services.execute_proposal(proposal.pk, actor=users["executor"])
    assert len(device.received) == 1


@pytest.mark.parametrize("role", ["viewer", "agent", "supervisor", "outsider"])
def test_only_executors_and_admins_may_execute(trusted, pump, users, role):
    proposal = factories.approved(pump, users["supervisor"])
    with pytest.raises(NotPermitted):
        services.execute_proposal(proposal.pk, actor=users[role])
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.APPROVED


def test_interlocks_are_checked_again_at_execution(pump, users, signing_key, device):
    """GIVEN an approval given while the pump was cool, WHEN it overheats before execution,
    THEN execution is refused, audited, and no command is sent."""
    factories.reading(pump)
    factories.signed_policy(pump.twin, signing_key, interlocks=[TEMP])
    wide = factories.simulation(pump, std=5.0)  # 97 °C is within the evidence's tolerance
    proposal = factories.approved(pump, users["supervisor"], run=wide)
    factories.reading(pump, {"Temperature": 97.0, "Volume Flow RateRMS": 125.0,
                             "Pressure": 1.0})
    with pytest.raises(InterlockBlocked, match="Temperature 97 < 95"):
        services.execute_proposal(proposal.pk)
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.APPROVED
    assert proposal_actions(proposal) == ["proposal.blocked"]
    assert device.received == []


def test_a_stale_interlock_reading_blocks_execution(pump, users, signing_key, device):
    old = timezone.now() - timedelta(seconds=120)
    factories.reading(pump, ts=old, received_at=old)
    factories.signed_policy(pump.twin, signing_key, interlocks=[TEMP])
    proposal = factories.approved(pump, users["supervisor"])
    with pytest.raises(InterlockBlocked, match="stale"):
        services.execute_proposal(proposal.pk)
    assert device.received == []


def test_drift_before_execution_blocks_it_until_re_simulated(trusted, pump, users, device):
    proposal = factories.approved(pump, users["supervisor"])
    factories.reading(pump, {"Temperature": 89.0, "Volume Flow RateRMS": 90.0,
                             "Pressure": 1.0})
    with pytest.raises(StaleEvidence):
        services.execute_proposal(proposal.pk)
    proposal.refresh_from_db()
    assert proposal.is_stale and proposal.status == ProposalStatus.APPROVED
    assert device.received == []


def test_lapsed_approvals_expire_the_proposal_instead_of_executing(trusted, pump, users, device):
    proposal = factories.approved(pump, users["supervisor"])
    Approval.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ProposalConflict, match="lapsed"):
        services.execute_proposal(proposal.pk)
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.EXPIRED
    assert device.received == []


def test_an_automatic_approval_is_withdrawn_if_the_policy_lost_its_trust(
        trusted, pump, device):
    """GIVEN a proposal auto-approved under a signed policy, WHEN an unsigned version is
    published before it runs, THEN it goes back to a human and nothing is sent."""
    proposal = factories.proposal(pump, status=ProposalStatus.APPROVED,
                                  decision=Decision.AUTO_EXECUTE)
    services.publish_policy(twin=pump.twin, body=factories.policy_body(pump.twin))
    with pytest.raises(AutomationDenied, match="unsigned"):
        services.execute_proposal(proposal.pk)
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.PENDING_APPROVAL
    assert device.received == []
    assert proposal_actions(proposal) == ["proposal.automation_denied"]
