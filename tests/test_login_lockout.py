"""Password guessing is throttled per username and per client address (django-axes)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _login(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password},
                       REMOTE_ADDR=address)


def test_a_username_is_locked_after_five_wrong_passwords_even_with_the_right_one(
    client, users, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    statuses = [_login(client, "supervisor-user", f"guess-{n}", f"10.0.0.{n}").status_code
                for n in range(5)]
    locked = _login(client, "supervisor-user", "pw", "10.0.0.99")
    assert statuses == [200] * 4 + [429]  # the form again with an error, then the lockout
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_an_address_is_locked_after_five_failures_across_usernames(client, users, settings):
    settings.AXES_FAILURE_LIMIT = 5
    for name in ["viewer-user", "agent-user", "executor-user", "admin-user", "nobody"]:
        _login(client, name, "wrong")
    assert _login(client, "supervisor-user", "pw").status_code == 429
    assert _login(client, "supervisor-user", "pw", "10.0.0.2").status_code == 302


def test_a_success_before_the_limit_resets_the_count(client, users, settings):
    settings.AXES_FAILURE_LIMIT = 3
    _login(client, "viewer-user", "wrong")
    _login(client, "viewer-user", "wrong")
    assert _login(client, "viewer-user", "pw").status_code == 302
    client.logout()
    _login(client, "viewer-user", "wrong")
    assert _login(client, "viewer-user", "pw").status_code == 302
