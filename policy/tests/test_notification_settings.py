"""The notification settings page (dashboard) and its Django admin: each user chooses kinds,
twins and channels for themselves only, among twins they may see."""

from __future__ import annotations

import pytest
from django.test import Client

from policy.models import NotificationSubscription
from tests.fixtures import grant_only
from twins.models import Twin

pytestmark = pytest.mark.django_db
URL = "/settings/notifications/"


@pytest.fixture
def other_twin(db) -> Twin:
    return Twin.objects.create(slug="other-plant", name="Other plant")


def choices(*, twins=(), **fields) -> dict:
    return {"kinds": ["approval_needed", "rolled_back"], "email": "on",
            "webhook_url": "https://hooks.example/opstwin", "twins": [t.pk for t in twins]} \
        | fields


def test_a_signed_out_visitor_is_sent_to_the_login_page(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_page_shows_the_defaults_and_only_twins_the_user_may_see(
        users, twin, other_twin, supervisor_client):
    """GIVEN a supervisor of one twin only; THEN the page offers that twin alone and says the
    defaults apply until saved."""
    grant_only(users, twin, roles=("supervisor",))
    page = supervisor_client.get(URL).content.decode()
    assert "These are the defaults" in page
    assert "Test plant" in page and "Other plant" not in page
    assert "A proposal waits for approval: <strong>available to you</strong>" in page


def test_saving_stores_the_users_choices(users, twin, other_twin, supervisor_client):
    """GIVEN a supervisor on the settings page; WHEN they choose two kinds, one twin, e-mail
    and a webhook; THEN exactly that is stored for them, and the page shows the secret."""
    response = supervisor_client.post(URL, choices(twins=[twin]))
    assert response.status_code == 303 and response["Location"] == URL
    saved = NotificationSubscription.objects.get(user=users["supervisor"])
    assert sorted(saved.kinds) == ["approval_needed", "rolled_back"]
    assert (saved.email, saved.all_twins, saved.webhook_url) == \
        (True, False, "https://hooks.example/opstwin")
    assert list(saved.twins.all()) == [twin]
    page = supervisor_client.get(URL).content.decode()
    assert saved.webhook_secret in page and "These are the defaults" not in page


def test_replacing_the_secret_changes_it(users, supervisor_client):
    supervisor_client.post(URL, choices())
    before = NotificationSubscription.objects.get(user=users["supervisor"]).webhook_secret
    supervisor_client.post(URL, choices(new_secret="on"))
    after = NotificationSubscription.objects.get(user=users["supervisor"]).webhook_secret
    assert after != before and len(after) == 43


def test_a_twin_the_user_may_not_see_is_refused(users, twin, other_twin, supervisor_client):
    grant_only(users, twin, roles=("supervisor",))
    response = supervisor_client.post(URL, choices(twins=[other_twin]))
    assert response.status_code == 400
    assert not NotificationSubscription.objects.exists()


def test_a_webhook_must_be_http_or_https(users, supervisor_client):
    response = supervisor_client.post(URL, choices(webhook_url="ftp://hooks.example/x"))
    assert response.status_code == 400
    assert not NotificationSubscription.objects.exists()


def test_a_forged_post_for_another_user_changes_only_the_senders_own_choices(
        users, twin, supervisor_client):
    """GIVEN a supervisor who names the admin in a forged ``user`` field; THEN the admin's
    choices are untouched and only the sender's own are stored."""
    response = supervisor_client.post(URL, choices(user=users["admin"].pk, kinds=["rolled_back"]))
    assert response.status_code == 303
    assert not NotificationSubscription.objects.filter(user=users["admin"]).exists()
    assert NotificationSubscription.objects.get(user=users["supervisor"]).kinds == \
        ["rolled_back"]


def test_a_cross_site_post_without_the_csrf_token_is_refused(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["supervisor"])
    response = client.post(URL, choices())
    assert response.status_code == 403
    assert not NotificationSubscription.objects.exists()


def test_an_admin_edits_a_users_choices_in_django_admin_within_their_scope(
        users, twin, other_twin, admin_client):
    """GIVEN a supervisor of one twin; WHEN an admin subscribes them to the other twin in
    Django admin; THEN it is refused; to their own twin, it is stored."""
    grant_only(users, twin, roles=("supervisor",))
    form = {"user": users["supervisor"].pk, "kinds": ["approval_needed"], "email": "on",
            "webhook_url": "", "twins": [other_twin.pk]}
    refused = admin_client.post("/admin/policy/notificationsubscription/add/", form)
    assert refused.status_code == 200  # the form again, with the error
    assert "may not see other-plant" in refused.content.decode()
    stored = admin_client.post("/admin/policy/notificationsubscription/add/",
                               form | {"twins": [twin.pk]})
    assert stored.status_code == 302
    assert list(NotificationSubscription.objects.get().twins.all()) == [twin]
    assert admin_client.get("/admin/policy/notificationdelivery/").status_code == 200
    assert admin_client.get("/admin/policy/notification/").status_code == 200
