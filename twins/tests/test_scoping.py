"""``twins.scoping``: the one place that decides which twins a user sees and may act on."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.http import Http404

from tests.fixtures import grant_only
from twins.models import Asset, Twin
from twins.roles import grant_twin
from twins.scoping import (
    get_scoped_or_404,
    may,
    operable_twins,
    refusal,
    scoped,
    twins_where,
    visible_twins,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def plants():
    return (Twin.objects.create(slug="plant", name="Plant"),
            Twin.objects.create(slug="elsewhere", name="Elsewhere"))


@pytest.fixture
def granted(plants, users):
    """Each role user granted "plant" only, as an admin does on its Object permissions page."""
    grant_only(users, plants[0])
    return users


def slugs(queryset) -> set[str]:
    return set(queryset.values_list("slug", flat=True))


def test_a_per_twin_grant_shows_that_twin_only(plants, granted):
    assert slugs(visible_twins(granted["viewer"])) == {"plant"}
    assert slugs(visible_twins(granted["admin"])) == {"plant", "elsewhere"}
    assert slugs(visible_twins(granted["outsider"])) == set()
    assert slugs(visible_twins(AnonymousUser())) == set()


def test_a_viewer_sees_a_twin_but_may_not_operate_it(plants, granted):
    assert slugs(operable_twins(granted["viewer"])) == set()
    assert slugs(operable_twins(granted["supervisor"])) == {"plant"}


@pytest.mark.parametrize(("role", "permission", "twin", "allowed"), [
    ("supervisor", "policy.approve_proposal", "plant", True),
    ("supervisor", "policy.approve_proposal", "elsewhere", False),  # not granted
    ("supervisor", "policy.execute_proposal", "plant", False),  # not the role's
    ("executor", "policy.execute_proposal", "plant", True),
    ("viewer", None, "plant", False),  # view only: may not operate
    ("agent", None, "plant", True),
    ("admin", "policy.execute_proposal", "elsewhere", True),
    ("outsider", None, "plant", False),
])
def test_may_needs_the_role_permission_and_operate_rights_on_that_twin(
        plants, granted, role, permission, twin, allowed):
    target = Twin.objects.get(slug=twin)
    assert may(granted[role], permission, target) is allowed
    assert (refusal(granted[role], permission, target) == "") is allowed
    assert (target in twins_where(granted[role], permission)) is allowed


def test_refusal_says_why(plants, granted):
    assert "lacks policy.execute_proposal" in refusal(granted["supervisor"],
                                                      "policy.execute_proposal", plants[0])
    assert "may not operate twin elsewhere" in refusal(granted["supervisor"], None, plants[1])
    assert "signed-in" in refusal(AnonymousUser(), None, plants[0])


def test_an_inactive_user_may_nothing(plants, granted):
    admin = granted["admin"]
    admin.is_active = False
    admin.save()
    assert not may(admin, None, plants[0])


def test_a_grant_to_a_role_group_scopes_every_member(plants, django_user_model):
    member = django_user_model.objects.create_user("member", password="pw")
    group = Group.objects.get(name="supervisor")
    member.groups.add(group)
    grant_twin(plants[1], to=group, role="supervisor")
    assert slugs(visible_twins(member)) == {"elsewhere"}
    assert may(member, "policy.approve_proposal", plants[1])


def test_scoped_querysets_and_404_outside_scope(plants, granted):
    inside = Asset.objects.create(twin=plants[0], slug="pump", name="Pump")
    outside = Asset.objects.create(twin=plants[1], slug="pump", name="Pump")
    viewer = granted["viewer"]
    assert list(scoped(Asset.objects.all(), viewer)) == [inside]
    assert get_scoped_or_404(Asset.objects.all(), viewer, pk=inside.pk) == inside
    with pytest.raises(Http404):
        get_scoped_or_404(Asset.objects.all(), viewer, pk=outside.pk)
