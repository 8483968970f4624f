"""Notification subscriptions change only through audited services (issue 15): creating,
changing and deleting one, on the settings page or in Django admin, is an audit entry and a
(twin-less) feed event with the notification-subscription.v1 state, which never holds the
webhook secret or the webhook's full URL (a URL may itself be a credential)."""

from __future__ import annotations

import json
import logging

import pytest

from aiw.api.serializers import ChangeEventSerializer
from policy.models import NotificationSubscription
from twins.feed_scope import scope_for
from twins.models import AuditEntry, ChangeEvent
from twins.schemas import errors

pytestmark = pytest.mark.django_db
URL = "/settings/notifications/"
HOOK = "https://hooks.example/services/T0KEN-IN-PATH?sig=QUERY-TOKEN"


def choices(**fields) -> dict:
    return {"kinds": ["approval_needed", "rolled_back"], "email": "on", "all_twins": "on",
            "webhook_url": HOOK} | fields


def entries(action: str | None = None) -> list[AuditEntry]:
    found = AuditEntry.objects.filter(resource_type="notification_subscription")
    return list(found.filter(action=action) if action else found.order_by("seq"))


def recorded(entry: AuditEntry) -> str:
    """Everything an audit entry stores, as one text to search."""
    return json.dumps([entry.before, entry.after, entry.reason, entry.action])


def assert_no_secrets(entry: AuditEntry, *secrets: str) -> None:
    text = recorded(entry)
    for secret in secrets:
        assert secret not in text
    assert "T0KEN-IN-PATH" not in text and "QUERY-TOKEN" not in text


def test_saving_for_the_first_time_is_audited_without_the_secret(
        users, twin, supervisor_client, caplog):
    """GIVEN a supervisor on the settings page; WHEN they save a webhook; THEN one
    notification_subscription.created entry by them, twin-less, with the webhook's origin and
    fingerprints only; the feed event validates against its schema; no log line holds the
    secret."""
    caplog.set_level(logging.DEBUG)
    assert supervisor_client.post(URL, choices()).status_code == 303
    saved = NotificationSubscription.objects.get(user=users["supervisor"])

    [entry] = entries()
    assert (entry.action, entry.actor, entry.twin_slug, entry.resource_id) == \
        ("notification_subscription.created", users["supervisor"].get_username(), "",
         str(saved.pk))
    assert entry.before is None
    after = entry.after
    assert after["kinds"] == ["approval_needed", "rolled_back"] and after["all_twins"]
    assert after["webhook"]["origin"] == "https://hooks.example"
    assert after["webhook"]["fingerprint"].startswith("sha256:")
    assert after["webhook_secret"]["set"] is True
    assert_no_secrets(entry, saved.webhook_secret)
    assert saved.webhook_secret not in caplog.text
    event = ChangeEvent.objects.get(resource_type="notification_subscription")
    assert event.type == "notification_subscription.created" and event.twin_id is None
    [item] = ChangeEventSerializer([event], many=True).data
    assert errors("notification-subscription.v1", item["data"]) == []
    assert errors("change-event.v1", item) == []


def test_a_change_records_before_and_after_and_a_new_secret_only_as_fingerprints(
        users, supervisor_client):
    supervisor_client.post(URL, choices())
    first = NotificationSubscription.objects.get().webhook_secret

    supervisor_client.post(URL, choices(kinds=["rolled_back"], new_secret="on"))

    second = NotificationSubscription.objects.get().webhook_secret
    [entry] = entries("notification_subscription.updated")
    assert entry.before["kinds"] == ["approval_needed", "rolled_back"]
    assert entry.after["kinds"] == ["rolled_back"]
    assert entry.before["webhook_secret"]["fingerprint"] != \
        entry.after["webhook_secret"]["fingerprint"]
    assert "webhook secret replaced" in entry.reason
    assert_no_secrets(entry, first, second)
    assert errors("notification-subscription.v1", entry.after) == []


def test_saving_unchanged_choices_writes_nothing(users, supervisor_client):
    supervisor_client.post(URL, choices())
    assert supervisor_client.post(URL, choices()).status_code == 303
    assert [e.action for e in entries()] == ["notification_subscription.created"]


def test_resetting_to_the_defaults_deletes_and_is_audited(users, supervisor_client):
    """GIVEN saved choices; WHEN the supervisor resets them; THEN the row is gone (defaults
    apply), and a notification_subscription.deleted entry keeps the last state."""
    supervisor_client.post(URL, choices())
    secret = NotificationSubscription.objects.get().webhook_secret

    response = supervisor_client.post(URL, {"reset": "1"})

    assert response.status_code == 303
    assert not NotificationSubscription.objects.exists()
    [entry] = entries("notification_subscription.deleted")
    assert entry.after is None and entry.before["webhook"]["origin"] == "https://hooks.example"
    assert_no_secrets(entry, secret)
    assert ChangeEvent.objects.filter(type="notification_subscription.deleted").count() == 1
    assert "These are the defaults" in supervisor_client.get(URL).content.decode()


def test_the_feed_shows_a_subscription_change_to_its_actor_and_admins_only(
        users, supervisor_client):
    supervisor_client.post(URL, choices())
    visible = {name: ChangeEvent.objects.filter(scope_for(users[name]).q(),
                                                resource_type="notification_subscription")
               .exists() for name in ("supervisor", "admin", "viewer", "agent")}
    assert visible == {"supervisor": True, "admin": True, "viewer": False, "agent": False}


def test_django_admin_adds_and_deletes_through_the_audited_services(users, twin, admin_client):
    form = {"user": users["supervisor"].pk, "kinds": ["approval_needed"], "email": "on",
            "all_twins": "on", "webhook_url": HOOK}
    assert admin_client.post("/admin/policy/notificationsubscription/add/", form) \
        .status_code == 302
    saved = NotificationSubscription.objects.get()
    deleted = admin_client.post(f"/admin/policy/notificationsubscription/{saved.pk}/delete/",
                                {"post": "yes"})
    assert deleted.status_code == 302 and not NotificationSubscription.objects.exists()

    created, gone = entries()
    admin = users["admin"].get_username()
    assert (created.action, created.actor) == ("notification_subscription.created", admin)
    assert created.after["user"] == users["supervisor"].get_username()
    assert (gone.action, gone.actor) == ("notification_subscription.deleted", admin)
    assert_no_secrets(created, saved.webhook_secret)
    assert_no_secrets(gone, saved.webhook_secret)


def test_deleting_a_user_records_their_subscription_going_with_them(users, supervisor_client):
    """GIVEN a supervisor with saved choices; WHEN an admin deletes the user; THEN the
    cascade does not remove the subscription unrecorded: a notification_subscription.deleted
    entry keeps its last state and says why."""
    supervisor_client.post(URL, choices())
    name = users["supervisor"].get_username()

    users["supervisor"].delete()

    assert not NotificationSubscription.objects.exists()
    [entry] = entries("notification_subscription.deleted")
    assert entry.before["user"] == name and entry.after is None
    assert entry.reason == f"user {name} deleted"


def test_django_admin_says_why_when_the_save_refuses_what_the_form_accepted(
        users, twin, admin_client, monkeypatch):
    """GIVEN a webhook host that resolves to a public address while the form is checked and
    to a private one when the subscription is saved (a DNS answer that changed in between);
    THEN the admin is sent back to the page with the reason, nothing saved, no server error."""
    from policy import webhooks

    answers = iter([None, "10.0.0.7 is a private address"])
    monkeypatch.setattr(webhooks, "refusal", lambda url: next(answers, None))
    form = {"user": users["supervisor"].pk, "kinds": ["approval_needed"], "email": "on",
            "all_twins": "on", "webhook_url": HOOK}

    response = admin_client.post("/admin/policy/notificationsubscription/add/", form,
                                 follow=True)

    assert response.status_code == 200
    assert "Not saved. webhook_url: 10.0.0.7 is a private address" in response.content.decode()
    assert not NotificationSubscription.objects.exists()
    assert not entries("notification_subscription.created")


def test_deleting_users_in_bulk_records_each_subscription(users, django_user_model):
    """The same through a queryset delete (admin's "delete selected"): one entry per user's
    subscription, none for a user without one."""
    from policy.notifications import save_subscription

    for role in ("supervisor", "admin"):
        save_subscription(NotificationSubscription(user=users[role], email=True,
                                                   all_twins=True))
    names = {users[r].get_username() for r in ("supervisor", "admin", "viewer")}

    django_user_model.objects.filter(username__in=names).delete()

    gone = entries("notification_subscription.deleted")
    assert sorted(e.reason for e in gone) == sorted(
        f"user {users[r].get_username()} deleted" for r in ("supervisor", "admin"))
