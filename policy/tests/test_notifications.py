"""Notifications (issue 15): approval requests, escalations, failed executions and rollbacks
reach the people who may act on them, by e-mail (Django's locmem backend) and by a signed
webhook (a real HTTP receiver on this machine), retried with backoff, audited, and never about
a twin the person may not act on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from policy import alerts, services
from policy.choices import DeliveryStatus, NotificationKind, ProposalStatus
from policy.models import Notification, NotificationDelivery, NotificationSubscription
from policy.tests import factories
from policy.tests.receiver import Receiver
from telemetry.models import Anomaly
from telemetry.tasks import escalate_anomalies
from tests.fixtures import grant_only, make_user
from twins.models import Asset, AuditEntry, Twin

pytestmark = pytest.mark.django_db
SECRET = "receiver-shared-secret-0123456789"


@pytest.fixture(autouse=True)
def mail_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PUBLIC_URL = "https://ops.example"
    settings.NOTIFY_MAX_RETRIES = 3
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the local Receiver
    return settings


@pytest.fixture
def trusted(pump, signing_key):
    """A signed policy that asks a human for anything it would not reject, and a fresh
    normal reading."""
    factories.reading(pump)
    _, verdict = factories.signed_policy(pump.twin, signing_key, thresholds={
        "auto_execute": 0.999, "approval": 0.0})
    assert verdict.trusted, verdict.reason


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


def subscribe(user, *, address: str = "", webhook: str = "", **choices):
    """Give ``user`` an e-mail ``address`` and a saved subscription (defaults: every kind,
    every twin, by e-mail; ``email=False`` for the webhook alone)."""
    if address:
        user.email = address
        user.save()
    subscription = NotificationSubscription.objects.create(
        user=user, webhook_url=webhook, webhook_secret=SECRET,
        **{k: v for k, v in choices.items() if k != "twins"})
    subscription.twins.set(choices.get("twins", []))
    return subscription


def pending_proposal(pump, users, capture):
    """An agent's proposal, decided "ask a human", committed (its on-commit work run)."""
    with capture(execute=True):
        proposal = services.propose(asset=pump, action="reduce_load",
                                    parameters={"fraction": 0.1}, actor=users["agent"],
                                    simulation=factories.simulation(pump))
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    return proposal


def test_a_proposal_waiting_for_approval_reaches_its_supervisor_by_mail_and_signed_webhook(
        trusted, pump, users, receiver, django_capture_on_commit_callbacks):
    """GIVEN a supervisor subscribed by e-mail and webhook, and a viewer with an address;
    WHEN an agent's proposal is decided "ask a human"; THEN the supervisor (not the viewer,
    who may not approve) gets one e-mail and one signed POST linking to the proposal's page,
    and an alert.approval_needed audit entry names both."""
    subscribe(users["supervisor"], address="sup@example.com", webhook=receiver.url)
    users["viewer"].email = "viewer@example.com"
    users["viewer"].save()

    proposal = pending_proposal(pump, users, django_capture_on_commit_callbacks)

    link = f"https://ops.example/dashboard/proposals/{proposal.pk}/"
    assert [m.to for m in mail.outbox] == [["sup@example.com"]]
    assert "Approval needed: reduce_load on Pump 1" in mail.outbox[0].subject
    assert link in mail.outbox[0].body
    [request] = receiver.requests
    assert request.signature_ok
    assert request.headers["x-opstwin-event"] == "approval_needed"
    body = request.json()
    assert (body["schema"], body["kind"], body["twin"]) == \
        ("notification.v1", "approval_needed", "plant")
    assert body["link"] == link and body["data"]["id"] == proposal.pk
    assert body["delivery"] == int(request.headers["x-opstwin-delivery"])
    entry = AuditEntry.objects.get(action="alert.approval_needed")
    assert entry.resource_id == str(proposal.pk)
    assert "sup@example.com" in entry.reason and "webhook at 127.0.0.1" in entry.reason
    assert "viewer@example.com" not in entry.reason
    assert set(NotificationDelivery.objects.values_list("channel", "status")) == {
        ("email", DeliveryStatus.DELIVERED), ("webhook", DeliveryStatus.DELIVERED)}


def test_a_forged_or_stale_signature_fails_the_receivers_check(receiver):
    """The receiver's own check (the README's snippet) refuses a wrong key and an old
    timestamp, so the test above could fail."""
    from policy.webhooks import signature

    body = b'{"kind":"approval_needed"}'
    now = int(timezone.now().timestamp())
    good = {"x-opstwin-timestamp": str(now), "x-opstwin-signature": signature(SECRET, now, body)}
    assert receiver.check(good, body)
    assert not receiver.check(good | {"x-opstwin-signature": signature("other", now, body)},
                              body)
    old = now - 3600
    assert not receiver.check({"x-opstwin-timestamp": str(old),
                               "x-opstwin-signature": signature(SECRET, old, body)}, body)
    assert not receiver.check(good, body + b" ")


def test_a_webhook_answering_500_is_retried_and_then_delivered(
        trusted, pump, users, receiver, django_capture_on_commit_callbacks):
    """GIVEN a receiver that answers 500 once, then 200; WHEN a notification is sent;
    THEN it is sent again (same delivery id, freshly signed) and recorded delivered after two
    attempts."""
    receiver.answers = [500]
    subscribe(users["supervisor"], webhook=receiver.url, email=False)

    pending_proposal(pump, users, django_capture_on_commit_callbacks)

    assert [r.signature_ok for r in receiver.requests] == [True, True]
    assert len({r.headers["x-opstwin-delivery"] for r in receiver.requests}) == 1
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == \
        (DeliveryStatus.DELIVERED, 2, 200)
    assert delivery.last_error == ""


def test_a_webhook_that_keeps_failing_is_recorded_failed_and_audited(
        trusted, pump, users, receiver, settings, django_capture_on_commit_callbacks):
    """GIVEN a receiver that always answers 500 and 2 retries allowed; WHEN a notification is
    sent; THEN it is tried 3 times, then recorded failed with the error and audited."""
    settings.NOTIFY_MAX_RETRIES = 2
    receiver.answers = [500] * 10
    subscribe(users["supervisor"], webhook=receiver.url, email=False)

    proposal = pending_proposal(pump, users, django_capture_on_commit_callbacks)

    assert len(receiver.requests) == 3
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == \
        (DeliveryStatus.FAILED, 3, 500)
    assert "HTTP 500" in delivery.last_error
    entry = AuditEntry.objects.get(action="alert.delivery_failed")
    assert entry.resource_id == str(proposal.pk)
    assert "supervisor-user failed after 3 attempts: HTTP 500" in entry.reason


def test_the_backoff_doubles_up_to_its_cap(settings):
    from policy.notifications import backoff

    settings.NOTIFY_BACKOFF_SECONDS, settings.NOTIFY_BACKOFF_MAX_SECONDS = 30.0, 200.0
    assert [backoff(n) for n in range(5)] == [30.0, 60.0, 120.0, 200.0, 200.0]


def test_a_user_not_allowed_on_a_twin_gets_nothing_about_it(
        trusted, pump, users, django_user_model, receiver, django_capture_on_commit_callbacks):
    """GIVEN a supervisor of another twin only, subscribed to everything by mail and webhook
    (even naming this twin, as an admin could); WHEN a proposal on this twin waits; THEN they
    get nothing, while this twin's supervisor is told."""
    other = Twin.objects.create(slug="other-plant", name="Other plant")
    stranger = make_user(django_user_model, "supervisor", name="other-supervisor")
    grant_only({"supervisor": stranger}, other, roles=("supervisor",))
    subscribe(stranger, address="stranger@example.com", webhook=receiver.url, all_twins=False,
              twins=[pump.twin, other])
    subscribe(users["supervisor"], address="sup@example.com")

    pending_proposal(pump, users, django_capture_on_commit_callbacks)

    assert [m.to for m in mail.outbox] == [["sup@example.com"]]
    assert receiver.requests == []
    assert not NotificationDelivery.objects.filter(user=stranger).exists()


def test_a_subscriber_gets_only_the_kinds_and_twins_chosen(
        trusted, pump, users, django_capture_on_commit_callbacks):
    """GIVEN one supervisor who chose only escalations, and one who chose only another twin;
    WHEN a proposal on this twin waits; THEN neither is told."""
    other = Twin.objects.create(slug="other-plant", name="Other plant")
    subscribe(users["supervisor"], address="sup@example.com",
              kinds=[NotificationKind.ANOMALY_ESCALATED])
    subscribe(users["admin"], address="admin@example.com", all_twins=False, twins=[other])

    pending_proposal(pump, users, django_capture_on_commit_callbacks)

    assert mail.outbox == []
    assert "notified nobody" in AuditEntry.objects.get(action="alert.approval_needed").reason


def test_an_escalation_reaches_the_webhook_of_those_who_may_acknowledge(
        pump, users, receiver):
    """GIVEN a critical anomaly nobody acknowledged in time and a supervisor's webhook;
    WHEN the escalation job runs; THEN the webhook gets a signed anomaly_escalated
    notification linking to the anomaly list."""
    subscribe(users["supervisor"], webhook=receiver.url, email=False)
    now = timezone.now()
    anomaly = Anomaly.objects.create(
        asset=pump, metric="Pressure", detector="ewma", kind="spike", severity="critical",
        score=0.99, started_at=now, last_seen_at=now)
    Anomaly.objects.filter(pk=anomaly.pk).update(created_at=now - timedelta(hours=1))

    assert escalate_anomalies() == [anomaly.pk]

    [request] = receiver.requests
    body = request.json()
    assert request.signature_ok and body["kind"] == "anomaly_escalated"
    assert body["resource"] == {"type": "anomaly", "id": str(anomaly.pk)}
    assert body["link"] == \
        "https://ops.example/anomalies/?status=open&severity=critical&twin=plant&asset=pump-1"


def test_a_failed_execution_is_notified_with_a_link_to_the_proposal(
        trusted, pump, users, settings, django_capture_on_commit_callbacks):
    """GIVEN an approved proposal and no broker answering; WHEN it is executed; THEN the
    supervisor is told the execution failed, why, and where to look."""
    subscribe(users["supervisor"], address="sup@example.com")
    settings.MQTT_URL = "mqtt://127.0.0.1:9"  # nothing listens on the discard port
    proposal = factories.approved(pump, users["supervisor"])

    with django_capture_on_commit_callbacks(execute=True):
        failed = services.execute_proposal(proposal.pk)

    assert failed.status == ProposalStatus.FAILED
    [sent] = mail.outbox
    assert "Execution failed: reduce_load on Pump 1" in sent.subject
    assert "unreachable" in sent.body
    assert f"https://ops.example/dashboard/proposals/{proposal.pk}/" in sent.body
    assert AuditEntry.objects.filter(action="alert.execution_failed").count() == 1


def test_a_rollback_is_notified_with_its_reason(
        trusted, pump, users, device, django_capture_on_commit_callbacks):
    """GIVEN an executed proposal on the simulated asset; WHEN a supervisor rolls it back;
    THEN subscribers are told, with the reason."""
    subscribe(users["admin"], address="admin@example.com")
    proposal = factories.approved(pump, users["supervisor"])
    assert services.execute_proposal(proposal.pk).status == ProposalStatus.VERIFYING

    with django_capture_on_commit_callbacks(execute=True):
        rolled = services.rollback_proposal(proposal.pk, actor=users["supervisor"],
                                            reason="operator saw cavitation")

    assert rolled.status == ProposalStatus.ROLLED_BACK
    [sent] = mail.outbox
    assert sent.to == ["admin@example.com"]
    assert "Rolled back: reduce_load on Pump 1" in sent.subject
    assert "operator saw cavitation" in sent.body


def test_a_redelivered_task_notifies_once_and_a_decided_proposal_not_at_all(
        trusted, pump, users, django_capture_on_commit_callbacks):
    """GIVEN a pending proposal already notified; WHEN the task runs again for the same
    revision it sends nothing; and once approved, an approval request is no longer sent."""
    subscribe(users["supervisor"], address="sup@example.com")
    proposal = pending_proposal(pump, users, django_capture_on_commit_callbacks)
    kind = NotificationKind.APPROVAL_NEEDED

    again = alerts.notify_proposal(kind, proposal.pk, proposal.revision)

    assert again == Notification.objects.get().pk and len(mail.outbox) == 1
    services.approve_proposal(proposal.pk, actor=users["supervisor"])
    assert alerts.notify_proposal(kind, proposal.pk, proposal.revision + 5) is None
    assert Notification.objects.count() == 1 and len(mail.outbox) == 1


def test_a_proposal_on_an_unsubscribed_asset_kind_still_audits_the_gap(
        trusted, pump, users, django_capture_on_commit_callbacks):
    """Nobody has an address: the notification is still in the audit log, naming nobody."""
    pending_proposal(pump, users, django_capture_on_commit_callbacks)
    assert mail.outbox == []
    assert AuditEntry.objects.get(action="alert.approval_needed").reason.count("nobody") == 1
    assert Asset.objects.count() == 1


def test_a_change_that_rolls_back_notifies_nobody(
        trusted, pump, users, django_capture_on_commit_callbacks):
    """The notification is queued on commit: a proposal whose transaction is rolled back
    never existed, and nobody hears of it."""
    subscribe(users["supervisor"], address="sup@example.com")
    with django_capture_on_commit_callbacks(execute=True), \
            pytest.raises(RuntimeError), transaction.atomic():
        services.propose(asset=pump, action="reduce_load", parameters={"fraction": 0.1},
                         actor=users["agent"], simulation=factories.simulation(pump))
        raise RuntimeError("the caller's transaction fails after the proposal")
    assert mail.outbox == [] and not Notification.objects.exists()


def test_an_admin_sends_a_failed_delivery_again(pump, users, receiver, settings, admin_client):
    """GIVEN a webhook delivery that failed (no retries allowed); WHEN an admin sends it again
    from Django admin and the receiver now takes it; THEN it is delivered."""
    from policy.notifications import notify

    settings.NOTIFY_MAX_RETRIES = 0
    receiver.answers = [503]
    subscribe(users["supervisor"], webhook=receiver.url, email=False)
    now = timezone.now()
    anomaly = Anomaly.objects.create(
        asset=pump, metric="Pressure", detector="ewma", kind="spike", severity="critical",
        score=0.99, started_at=now, last_seen_at=now)
    notify(alerts.escalation_message(anomaly))
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.response_status) == (DeliveryStatus.FAILED, 503)

    response = admin_client.post("/admin/policy/notificationdelivery/", {
        "action": "send_again", "_selected_action": [delivery.pk]})

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == \
        (DeliveryStatus.DELIVERED, 2, 200)
    assert [r.signature_ok for r in receiver.requests] == [True, True]


def test_a_supervisor_is_not_asked_to_approve_their_own_proposal(
        trusted, pump, users, django_capture_on_commit_callbacks):
    """Four eyes: the proposer may not approve, so only the other approvers are asked."""
    subscribe(users["supervisor"], address="sup@example.com")
    subscribe(users["admin"], address="admin@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        proposal = services.propose(asset=pump, action="reduce_load",
                                    parameters={"fraction": 0.1}, actor=users["supervisor"],
                                    simulation=factories.simulation(pump))
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    assert [m.to for m in mail.outbox] == [["admin@example.com"]]


def test_an_automatic_rollback_after_a_breach_says_why_with_the_numbers(
        trusted, pump, users, device, django_capture_on_commit_callbacks):
    """GIVEN an executed proposal whose flow then reads ~100 against a predicted 120..130;
    WHEN the verifier judges the window and rolls back by itself; THEN subscribers are told it
    was rolled back, because of the breach, with the readings outside the band."""
    from policy.tests.test_verification import executed, observe

    subscribe(users["supervisor"], address="sup@example.com")
    proposal = executed(pump, users)
    observe(proposal, [101.0, 99.0, 100.0])

    with django_capture_on_commit_callbacks(execute=True):
        rolled = services.verify_proposal(proposal.pk)

    assert rolled.status == ProposalStatus.ROLLED_BACK
    [sent] = mail.outbox
    assert "Rolled back: reduce_load on Pump 1" in sent.subject
    assert "verification breach" in sent.body
    assert "3 of 3 readings of Volume Flow RateRMS outside the simulated band 120.0..130.0" \
        in sent.body
    assert f"https://ops.example/dashboard/proposals/{proposal.pk}/" in sent.body
    assert AuditEntry.objects.filter(action="alert.rolled_back").count() == 1


def test_a_breach_that_cannot_be_rolled_back_is_notified_as_such(
        trusted, pump, users, device, django_capture_on_commit_callbacks):
    """GIVEN an executed proposal without a rollback action; WHEN its verification breaches;
    THEN the failure notification says the execution ran, the telemetry breached and why no
    rollback ran (not "execution failed")."""
    from policy.tests.test_verification import executed, observe

    subscribe(users["supervisor"], address="sup@example.com")
    proposal = executed(pump, users, rollback_action="")
    observe(proposal, [100.0, 100.0, 100.0])

    with django_capture_on_commit_callbacks(execute=True):
        failed = services.verify_proposal(proposal.pk)

    assert failed.status == ProposalStatus.FAILED
    [sent] = mail.outbox
    assert "Verification breach, not rolled back: reduce_load on Pump 1" in sent.subject
    assert "reduce_load has no rollback action" in sent.body
    assert "Execution failed" not in sent.subject
    assert AuditEntry.objects.filter(action="alert.execution_failed").count() == 1
