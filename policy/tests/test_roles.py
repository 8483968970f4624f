"""The five roles: model permissions in groups, twin access per twin."""

import pytest
from django.contrib.auth.models import Group

from twins.roles import grant_twin, role_of
from twins.scoping import operable_twins, visible_twins

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("role", "perm", "expected"), [
    ("viewer", "policy.view_proposal", True),
    ("viewer", "policy.add_proposal", False),
    ("viewer", "policy.approve_proposal", False),
    ("agent", "policy.add_proposal", True),
    ("agent", "policy.approve_proposal", False),
    ("agent", "policy.execute_proposal", False),
    ("executor", "policy.execute_proposal", True),
    ("executor", "policy.approve_proposal", False),
    ("executor", "policy.add_proposal", False),
    ("supervisor", "policy.add_proposal", True),
    ("supervisor", "policy.approve_proposal", True),
    ("supervisor", "policy.rollback_proposal", True),
    ("supervisor", "policy.execute_proposal", False),
    ("admin", "policy.approve_proposal", True),
    ("admin", "policy.execute_proposal", True),
    ("admin", "auth.change_user", True),
    ("admin", "twins.operate_twin", True),
    ("supervisor", "twins.operate_twin", False),
    ("viewer", "twins.view_twin", False),
])
def test_each_role_group_carries_its_permissions(role, perm, expected):
    app_label, codename = perm.split(".")
    has = Group.objects.get(name=role).permissions.filter(
        content_type__app_label=app_label, codename=codename).exists()
    assert has is expected


def test_twin_access_is_granted_per_twin(twin, django_user_model):
    user = django_user_model.objects.create_user("scoped", password="pw")
    user.groups.add(Group.objects.get(name="viewer"))
    assert list(visible_twins(user)) == []
    grant_twin(twin, to=user, role="viewer")
    user = django_user_model.objects.get(pk=user.pk)  # fresh permission cache
    assert list(visible_twins(user)) == [twin]
    assert list(operable_twins(user)) == []


def test_role_of_names_the_highest_role(users):
    assert role_of(users["admin"]) == "admin"
    assert role_of(users["viewer"]) == "viewer"
    assert role_of(users["outsider"]) == ""
