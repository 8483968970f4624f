import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("role", "perm", "expected"), [
    ("viewer", "policy.view_proposal", True),
    ("viewer", "policy.approve_proposal", False),
    ("agent", "policy.add_proposal", True),
    ("agent", "policy.approve_proposal", False),
    ("executor", "policy.execute_proposal", True),
    ("executor", "policy.approve_proposal", False),
    ("supervisor", "policy.approve_proposal", True),
    ("supervisor", "policy.execute_proposal", False),
    ("admin", "policy.approve_proposal", True),
    ("admin", "auth.change_user", True),
])
def test_each_role_group_carries_its_permissions(role, perm, expected):
    app_label, codename = perm.split(".")
    has = Group.objects.get(name=role).permissions.filter(
        content_type__app_label=app_label, codename=codename).exists()
    assert has is expected
