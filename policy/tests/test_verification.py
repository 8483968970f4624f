"""After execution: observed telemetry against the simulated p5–p95 band; rollback."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils.dateparse import parse_datetime

from demo.device import SimulatedDevice
from policy import services
from policy.choices import ProposalStatus
from policy.errors import NoRollback, NotPermitted, ProposalConflict
from policy.state import newest_event_ts
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db
FLOW = "Volume Flow RateRMS"


def executed(pump, users, **fields):
    """A proposal executed through the services (band 120..130 L/min on the flow)."""
    proposal = factories.approved(pump, users["supervisor"], **fields)
    done = services.execute_proposal(proposal.pk)
    assert done.status == ProposalStatus.VERIFYING, done.execution
    return done


def observe(proposal, values: list[float], *, close: bool = True) -> None:
    """Flow readings inside the window (1 s apart) and, if ``close``, one past its end."""
    start = parse_datetime(proposal.verification["from_ts"])
    factories.window(proposal.asset, FLOW, values, start=start + timedelta(seconds=1))
    if close:
        factories.reading(proposal.asset, {FLOW: 125.0}, ts=start + timedelta(seconds=61))


def alerts() -> list[str]:
    return list(AuditEntry.objects.filter(action__startswith="alert.").values_list(
        "action", flat=True))


def test_telemetry_inside_the_band_verifies_the_execution(trusted, pump, users, device):
    proposal = executed(pump, users)
    assert proposal.verification["band"] == [120.0, 130.0]
    observe(proposal, [124.0, 126.0, 131.0, 125.0])  # one of four outside: within tolerance
    verified = services.verify_proposal(proposal.pk)
    assert verified.status == ProposalStatus.VERIFIED
    assert verified.verification["outside"] == 1 and verified.verification["n"] == 4
    assert alerts() == []


def test_a_breach_alerts_and_rolls_back_automatically(trusted, pump, users, device):
    """GIVEN an executed load reduction predicted to keep flow in 120..130, WHEN the flow
    reads ~100 for the window, THEN a breach alert is audited and restore_load is sent."""
    proposal = executed(pump, users)
    observe(proposal, [101.0, 99.0, 100.0])
    rolled = services.verify_proposal(proposal.pk)
    assert rolled.status == ProposalStatus.ROLLED_BACK
    assert rolled.verification["outcome"] == "breach"
    assert alerts() == ["alert.verification_breach"]
    assert [c["ack"]["command_id"] for c in device.received] == [
        f"proposal-{proposal.pk}", f"proposal-{proposal.pk}-rollback"]
    assert rolled.rollback["payload"]["action"] == "restore_load"
    assert services.verify_proposal(proposal.pk).status == ProposalStatus.ROLLED_BACK
    assert len(device.received) == 2


def test_an_open_window_is_not_judged(trusted, pump, users, device):
    proposal = executed(pump, users)
    observe(proposal, [100.0, 100.0, 100.0], close=False)
    assert services.verify_proposal(proposal.pk).status == ProposalStatus.VERIFYING
    assert len(device.received) == 1


def test_too_few_readings_by_the_deadline_is_inconclusive_not_an_action(
        trusted, pump, users, device):
    proposal = executed(pump, users)
    observe(proposal, [100.0], close=False)
    judged = services.verify_proposal(proposal.pk,
                                      now=proposal.verify_until + timedelta(seconds=1))
    assert judged.status == ProposalStatus.EXECUTED
    assert judged.verification["outcome"] == "inconclusive"
    assert alerts() == ["alert.verification_inconclusive"]
    assert len(device.received) == 1


def test_a_breach_without_a_rollback_action_fails_loudly(trusted, pump, users, device):
    proposal = executed(pump, users, rollback_action="")
    observe(proposal, [100.0, 100.0, 100.0])
    failed = services.verify_proposal(proposal.pk)
    assert failed.status == ProposalStatus.FAILED
    assert alerts() == ["alert.verification_breach", "alert.rollback_unavailable",
                        "alert.rollback_blocked"]


def test_a_supervisor_rolls_back_by_hand_once(trusted, pump, users, device):
    proposal = executed(pump, users)
    rolled = services.rollback_proposal(proposal.pk, actor=users["supervisor"],
                                        reason="operator saw cavitation")
    assert rolled.status == ProposalStatus.ROLLED_BACK
    assert rolled.rollback["effect"]["ok"] is True
    with pytest.raises(ProposalConflict):
        services.rollback_proposal(proposal.pk, actor=users["admin"], reason="again")
    assert len(device.received) == 2
    assert AuditEntry.objects.get(action="proposal.rolled_back").reason == \
        "operator saw cavitation"


@pytest.mark.parametrize("role", ["viewer", "agent", "executor", "outsider"])
def test_only_supervisors_and_admins_may_roll_back(trusted, pump, users, device, role):
    proposal = executed(pump, users)
    with pytest.raises(NotPermitted):
        services.rollback_proposal(proposal.pk, actor=users[role], reason="no")
    assert len(device.received) == 1


def test_an_action_without_an_undo_cannot_be_rolled_back(trusted, pump, users, device):
    proposal = executed(pump, users, rollback_action="")
    with pytest.raises(NoRollback):
        services.rollback_proposal(proposal.pk, actor=users["supervisor"], reason="undo")
    assert alerts() == ["alert.rollback_unavailable"]


def test_an_unacknowledged_rollback_fails_with_an_alert(trusted, pump, users, device, settings):
    proposal = executed(pump, users)
    device.stop()
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 0.3
    failed = services.rollback_proposal(proposal.pk, actor=users["supervisor"], reason="undo")
    assert failed.status == ProposalStatus.FAILED
    assert alerts() == ["alert.rollback_failed"]


class _AnsweringLate(SimulatedDevice):
    """The simulated asset, its acks saying when its readings begin to answer a command."""

    effective_from: str | None = None

    def handle(self, topic: str, payload: bytes) -> dict:
        ack = super().handle(topic, payload)
        return ack | {"effective_from": self.effective_from} if self.effective_from else ack


@pytest.fixture
def late_device(mqtt_url, prefix, twin):
    sim = _AnsweringLate(mqtt_url, twin.slug).start()
    yield sim
    sim.stop()


def test_readings_on_their_way_at_execution_are_not_judged(trusted, pump, users, late_device):
    """GIVEN an asset whose ack says its readings answer the command only after sensor time
    newest + 10 s (the ten readings before were already on their way, showing the plant
    before the command, out of band); THEN the window starts there, and the execution is
    judged on the readings after it: verified, not rolled back."""
    newest = newest_event_ts(pump)
    effective = newest + timedelta(seconds=10)
    late_device.effective_from = effective.isoformat()

    proposal = executed(pump, users)

    assert parse_datetime(proposal.execution["effect"]["effective_from"]) == effective
    assert parse_datetime(proposal.verification["from_ts"]) == effective
    executed_at = parse_datetime(proposal.verification["started_at"])
    assert proposal.verify_until == executed_at + timedelta(seconds=70)  # window + 10 s
    factories.window(pump, FLOW, [100.0] * 9, start=newest + timedelta(seconds=1))
    observe(proposal, [124.0, 126.0, 125.0])
    verified = services.verify_proposal(proposal.pk)
    assert verified.status == ProposalStatus.VERIFIED
    assert (verified.verification["n"], verified.verification["outside"]) == (3, 0)


@pytest.mark.parametrize("said", ["yesterday", "2026-01-01T00:00:00", 17])
def test_an_ack_time_that_is_not_an_instant_with_an_offset_is_ignored(
        trusted, pump, users, late_device, said):
    late_device.effective_from = said
    proposal = executed(pump, users)
    assert "effective_from" not in proposal.execution["effect"]
    assert parse_datetime(proposal.verification["from_ts"]) == newest_event_ts(pump)


@pytest.mark.parametrize("ahead", [timedelta(seconds=61), timedelta(days=365 * 7000)])
def test_an_ack_time_past_the_window_moves_nothing_and_is_reported(
        trusted, pump, users, late_device, ahead):
    """A device clock far ahead (a minute past the 60 s window, or year 9000) may not empty
    the window into an inconclusive verification: the window starts at the newest reading,
    the plan and the audit say why the ack's time was ignored, and the window is judged."""
    newest = newest_event_ts(pump)
    late_device.effective_from = (newest + ahead).isoformat()

    proposal = executed(pump, users)

    assert parse_datetime(proposal.verification["from_ts"]) == newest
    assert "ignored" in proposal.verification["effective_from_ignored"]
    assert "ignored" in AuditEntry.objects.get(action="proposal.verifying").reason
    observe(proposal, [124.0, 126.0, 125.0])
    assert services.verify_proposal(proposal.pk).status == ProposalStatus.VERIFIED
