"""Commands left in flight by a process that died: re-sent under the same command id once
their lease lapsed, or given up as failed, audited either way; the asset applies each command
id once. Here the "dead process" is a lease taken and never completed, in this process; the
real SIGKILLed Celery worker is in test_execution_crash.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from opstwin_site.celery import app as celery_app
from policy import services, tasks
from policy.choices import ProposalStatus
from policy.command_publisher import send_command
from policy.models import Proposal
from policy.services.attempts import EXECUTION, ROLLBACK, take_attempt
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db


def proposal_actions(proposal) -> list[str]:
    return list(AuditEntry.objects.filter(resource_type="proposal", resource_id=str(proposal.pk))
                .values_list("action", flat=True))


def lapse(proposal_id: int, field: str = "execution", **changes) -> None:
    """Move the command's lease (and claim) into the past: its holder is gone."""
    proposal = Proposal.objects.get(pk=proposal_id)
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    state = getattr(proposal, field) | {"claimed_at": past} | changes
    if state.get("lease_until"):
        state["lease_until"] = past
    Proposal.objects.filter(pk=proposal_id).update(**{field: state})


def died_after_claim(pump, users) -> Proposal:
    """Claimed and leased (attempt 1), then the process died before sending."""
    proposal = factories.approved(pump, users["supervisor"])
    services.claim_execution(proposal.pk)
    take_attempt(proposal.pk, EXECUTION, recovering=False)
    lapse(proposal.pk)
    return proposal


def died_after_send(proposal, field: str, kind, action: str) -> None:
    """Attempt 1 leased and sent (the asset applied it), then the process died before the
    outcome was recorded."""
    _, state = take_attempt(proposal.pk, kind, recovering=False)
    send_command(twin_slug=proposal.twin.slug, asset_slug=proposal.asset.slug,
                 command_id=state["command_id"], action=action, parameters=proposal.parameters,
                 expires_at=state["lease_until"])
    lapse(proposal.pk, field)


def test_a_claim_records_a_stable_command_id_before_anything_is_sent(trusted, pump, users,
                                                                     device):
    proposal = factories.approved(pump, users["supervisor"])
    claimed = services.claim_execution(proposal.pk)
    assert claimed.status == ProposalStatus.EXECUTING
    assert claimed.execution | {"preflight": None, "claimed_at": None} == {
        "command_id": f"proposal-{proposal.pk}", "preflight": None, "claimed_at": None,
        "attempts": 0, "lease_until": None}
    assert device.received == []


def test_an_execution_that_died_before_sending_is_sent_by_the_sweeper(trusted, pump, users,
                                                                      device):
    """GIVEN an execution whose process died between the claim and the send, WHEN its lease
    has lapsed and the sweeper runs, THEN the command is sent with the same id, applied once,
    and the proposal is executed; the re-send and the outcome are audited."""
    proposal = died_after_claim(pump, users)
    assert services.recover_commands() == 1
    done = Proposal.objects.get(pk=proposal.pk)
    assert done.status == ProposalStatus.VERIFYING
    assert done.execution["attempts"] == 2 and done.execution["acknowledged"] is True
    assert "lease_until" not in done.execution
    assert [a["command_id"] for a in device.applied] == [f"proposal-{proposal.pk}"]
    assert proposal_actions(proposal) == ["proposal.execute", "proposal.execute_resent",
                                          "proposal.executed", "proposal.verifying"]


def test_a_command_applied_before_the_crash_is_acknowledged_again_without_a_second_effect(
        trusted, pump, users, device):
    """GIVEN an execution sent and applied whose outcome was never recorded, WHEN the sweeper
    sends it again, THEN the asset answers from its record of that command id: two
    deliveries, one effect, and the proposal is executed."""
    proposal = factories.approved(pump, users["supervisor"])
    services.claim_execution(proposal.pk)
    died_after_send(proposal, "execution", EXECUTION, proposal.action)
    assert services.recover_commands() == 1
    done = Proposal.objects.get(pk=proposal.pk)
    assert done.status == ProposalStatus.VERIFYING
    assert len(device.received) == 2 and device.received[1]["ack"]["duplicate"] is True
    assert len(device.applied) == 1


def test_a_fresh_claim_is_left_to_the_task_its_request_enqueued(trusted, pump, users, device):
    proposal = factories.approved(pump, users["supervisor"])
    services.claim_execution(proposal.pk)
    assert services.recover_commands() == 0
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.EXECUTING
    assert device.received == []


def test_a_live_lease_is_not_taken_by_a_redelivered_task(trusted, pump, users, device):
    """GIVEN an attempt in progress elsewhere (live lease), WHEN the execute task is
    delivered again, THEN it sends nothing and leaves the proposal executing."""
    proposal = factories.approved(pump, users["supervisor"])
    services.claim_execution(proposal.pk)
    take_attempt(proposal.pk, EXECUTION, recovering=False)
    assert tasks.execute_proposal(proposal.pk).startswith("not executed: Proposal is not")
    assert services.recover_commands() == 0
    assert Proposal.objects.get(pk=proposal.pk).execution["attempts"] == 1
    assert device.received == []


def test_a_redelivered_execute_task_completes_the_execution_instead_of_conflicting(
        trusted, pump, users, device):
    """GIVEN the automatic path's task died after its claim (acks_late: Celery delivers it
    again), WHEN it runs again, THEN it completes the execution rather than failing with
    ProposalConflict."""
    proposal = died_after_claim(pump, users)
    assert tasks.execute_proposal(proposal.pk) == ProposalStatus.VERIFYING
    assert len(device.applied) == 1


def test_after_the_last_attempt_the_command_is_failed_and_audited(trusted, pump, users,
                                                                  device, settings):
    proposal = died_after_claim(pump, users)
    lapse(proposal.pk, attempts=settings.POLICY_COMMAND_MAX_ATTEMPTS)
    assert services.recover_commands() == 1
    failed = Proposal.objects.get(pk=proposal.pk)
    assert failed.status == ProposalStatus.FAILED
    assert failed.execution["effect"]["status"] == "unknown"
    assert proposal_actions(proposal)[-1] == "proposal.failed"
    entry = AuditEntry.objects.filter(action="proposal.failed").get()
    assert entry.actor == "sweeper" and "no outcome after 3 attempts" in entry.reason
    assert device.received == []


def test_a_rollback_that_died_after_sending_is_recovered_once(trusted, pump, users, device):
    """GIVEN a rollback claimed and sent whose outcome was lost, WHEN the sweeper runs, THEN
    the proposal is rolled back and the asset applied restore_load once."""
    proposal = factories.approved(pump, users["supervisor"])
    services.execute_proposal(proposal.pk)
    services.claim_rollback(proposal.pk, reason="operator undo")
    died_after_send(proposal, "rollback", ROLLBACK, "restore_load")
    assert services.recover_commands() == 1
    rolled = Proposal.objects.get(pk=proposal.pk)
    assert rolled.status == ProposalStatus.ROLLED_BACK
    assert rolled.rollback["reason"] == "operator undo" and rolled.rollback["attempts"] == 2
    assert [a["command_id"] for a in device.applied] == [
        f"proposal-{proposal.pk}", f"proposal-{proposal.pk}-rollback"]
    assert proposal_actions(proposal)[-3:] == ["proposal.rollback_start",
                                               "proposal.rollback_resent",
                                               "proposal.rolled_back"]


def test_an_expired_copy_of_a_command_has_no_effect(trusted, pump, users, device):
    """A copy that reaches the asset after the attempt it belonged to lapsed (e.g. re-sent by
    the broker after a reconnect) is refused, so a command given up on stays without
    effect."""
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    outcome = send_command(twin_slug=pump.twin.slug, asset_slug=pump.slug, command_id="late-1",
                           action="reduce_load", parameters={}, expires_at=past)
    assert outcome["effect"]["status"] == "rejected" and "expired" in outcome["effect"]["detail"]
    assert device.applied == []


def test_the_sweep_is_on_the_beat_schedule():
    schedule = {e["task"] for e in celery_app.conf.beat_schedule.values()}
    assert "policy.tasks.recover_commands" in schedule


def test_every_state_of_a_command_is_valid_proposal_v1(trusted, pump, users, device, settings):
    """Claimed (in flight), recorded, rolling back, rolled back and given up: each form of
    ``execution``/``rollback`` an agent can read validates against the served schema."""
    from twins.schemas import errors

    def check(proposal_id: int) -> None:
        document = services.serialize(Proposal.objects.get(pk=proposal_id))
        assert errors("proposal.v1", document) == [], document["status"]

    proposal = factories.approved(pump, users["supervisor"])
    services.claim_execution(proposal.pk)
    check(proposal.pk)
    services.complete_execution(proposal.pk)
    check(proposal.pk)
    services.claim_rollback(proposal.pk, reason="undo")
    check(proposal.pk)
    services.complete_rollback(proposal.pk)
    check(proposal.pk)
    given_up = died_after_claim(pump, users)
    lapse(given_up.pk, attempts=settings.POLICY_COMMAND_MAX_ATTEMPTS)
    services.recover_commands()
    check(given_up.pk)
    assert Proposal.objects.get(pk=given_up.pk).status == ProposalStatus.FAILED
