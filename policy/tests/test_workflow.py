"""Propose → approve → execute (over real MQTT) → audited, and the ways it must refuse."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from django.db import connection

from opstwin_site.mqtt import connect_client, make_client
from policy import services
from policy.audit import entry_hash
from policy.choices import Decision, ProposalStatus
from policy.errors import NotPermitted, ProposalConflict, SelfApproval
from policy.models import AuditEntry, Proposal


def make_proposal(pump, *, status=ProposalStatus.PENDING_APPROVAL, proposed_by=None):
    """A proposal row as the policy would leave it (a factory, not the workflow under test)."""
    return Proposal.objects.create(
        twin=pump.twin, asset=pump, action="reduce_load", parameters={"fraction": 0.1},
        risk_level="MEDIUM", confidence=0.8, confidence_breakdown={},
        decision=Decision.REQUIRE_APPROVAL, status=status, proposed_by=proposed_by,
    )


@pytest.fixture
def command_listener(mqtt_url, settings):
    """Subscribe to this test's command topics on the real broker; yields received payloads."""
    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    received: list[dict] = []
    client = make_client(mqtt_url)
    client.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    connect_client(client, mqtt_url)
    client.subscribe(f"{settings.MQTT_TOPIC_PREFIX}/+/+/command", qos=1)
    client.loop_start()
    time.sleep(0.3)
    yield received
    client.loop_stop()
    client.disconnect()


@pytest.mark.django_db(transaction=True)
def test_a_supervisor_approval_executes_the_command_over_mqtt(pump, users, command_listener):
    proposal = make_proposal(pump, proposed_by=users["agent"])
    services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.EXECUTED
    assert proposal.execution["delivered"] is True
    deadline = time.monotonic() + 5
    while not command_listener and time.monotonic() < deadline:
        time.sleep(0.05)
    assert command_listener[0]["action"] == "reduce_load"
    assert command_listener[0]["command_id"] == f"proposal-{proposal.pk}"
    actions = list(AuditEntry.objects.filter(resource_id=str(proposal.pk))
                   .values_list("action", flat=True))
    assert actions == ["proposal.approve", "proposal.execute", "proposal.executed"]


@pytest.mark.django_db
def test_execution_is_recorded_as_failed_when_no_broker_answers(
    pump, users, settings, django_capture_on_commit_callbacks
):
    settings.MQTT_URL = "mqtt://127.0.0.1:9"  # nothing listens on the discard port
    proposal = make_proposal(pump, proposed_by=users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.FAILED
    assert "unreachable" in proposal.execution["detail"]


@pytest.mark.django_db
def test_the_proposer_may_not_approve_its_own_proposal(pump, users):
    proposal = make_proposal(pump, proposed_by=users["supervisor"])
    with pytest.raises(SelfApproval):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL


@pytest.mark.parametrize("role", ["viewer", "agent", "executor", "outsider"])
@pytest.mark.django_db
def test_only_supervisors_and_admins_may_approve(pump, users, role):
    proposal = make_proposal(pump)
    with pytest.raises(NotPermitted):
        services.approve_proposal(proposal.pk, actor=users[role])


@pytest.mark.django_db
def test_a_rejection_needs_a_reason(pump, users):
    proposal = make_proposal(pump)
    with pytest.raises(ValueError, match="reason"):
        services.reject_proposal(proposal.pk, actor=users["supervisor"], reason="  ")
    rejected = services.reject_proposal(proposal.pk, actor=users["supervisor"],
                                        reason="flow already recovering")
    assert rejected.status == ProposalStatus.REJECTED
    assert AuditEntry.objects.get(action="proposal.reject").reason == "flow already recovering"


@pytest.mark.django_db
def test_a_decided_proposal_cannot_be_approved_again(pump, users, settings):
    settings.MQTT_URL = None
    proposal = make_proposal(pump, status=ProposalStatus.REJECTED)
    with pytest.raises(ProposalConflict):
        services.approve_proposal(proposal.pk, actor=users["supervisor"])


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_approvals_execute_once(pump, users, django_user_model, settings):
    settings.MQTT_URL = None  # execution outcome is irrelevant here; the count is not
    from tests.fixtures import make_user

    second = make_user(django_user_model, "supervisor", name="supervisor-2")
    proposal = make_proposal(pump)
    barrier, outcomes = threading.Barrier(2), []

    def approve(actor):
        barrier.wait()
        try:
            services.approve_proposal(proposal.pk, actor=actor)
            outcomes.append("ok")
        except ProposalConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (users["supervisor"], second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    assert AuditEntry.objects.filter(action="proposal.execute").count() == 1


@pytest.mark.django_db
def test_every_audit_entry_links_to_the_one_before(pump, users, settings):
    settings.MQTT_URL = None
    for _ in range(3):
        services.reject_proposal(make_proposal(pump).pk, actor=users["supervisor"], reason="no")
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == [1, 2, 3]
    for previous, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == previous.hash
        assert entry.hash == entry_hash(entry)


@pytest.mark.django_db
def test_the_database_refuses_to_alter_the_audit_chain(pump, users):
    from django.db import DatabaseError, transaction

    services.reject_proposal(make_proposal(pump).pk, actor=users["supervisor"], reason="no")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().reason == "no"
