"""The one place that decides which twins a user may see or operate on.

Every API queryset and dashboard page narrows through these functions, so a per-twin grant
made in Django admin (django-guardian) takes effect everywhere at once. A user whose role
group holds the model permission (e.g. ``twins.view_twin``) sees every twin; anyone else sees
only the twins granted to them or their groups object by object.
"""

from __future__ import annotations

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from twins.models import Twin


def visible_twins(user) -> QuerySet[Twin]:
    """Twins ``user`` may read (global or per-object ``twins.view_twin``)."""
    if not user.is_authenticated:
        return Twin.objects.none()
    return get_objects_for_user(user, "twins.view_twin", klass=Twin, accept_global_perms=True)


def operable_twins(user) -> QuerySet[Twin]:
    """Twins on which ``user`` may propose, approve or execute (``twins.operate_twin``)."""
    if not user.is_authenticated:
        return Twin.objects.none()
    return get_objects_for_user(user, "twins.operate_twin", klass=Twin, accept_global_perms=True)
