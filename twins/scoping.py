"""The one place that decides which twins a user may see or operate on.

Every API queryset and dashboard page narrows through this module: API viewsets inherit
``TwinScopedViewSetMixin``; dashboard views call ``scoped`` / ``get_scoped_or_404``. So a
per-twin grant made in Django admin (django-guardian, the twin's "Object permissions" page)
takes effect everywhere at once, and an object on a twin outside the caller's scope is a 404
(indistinguishable from one that does not exist), never a 403 that would confirm it exists.

A user holding ``twins.view_twin`` globally (the admin role) sees every twin; anyone else
sees only the twins granted to them or their groups object by object (``twins.roles``).
"""

from __future__ import annotations

from django.db.models import Model, QuerySet
from django.http import Http404
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


def may(user, permission: str | None, twin) -> bool:
    """The one rule for "may ``user`` do this to an object of ``twin``".

    True when ``user`` is an active, authenticated user holding ``permission`` (a global model
    permission such as ``"policy.approve_proposal"``, which the user's role group gives; None
    when no more than operating is needed) AND may operate ``twin`` (``twins.operate_twin``
    globally, as admins, or on that twin through a django-guardian grant). Services raise
    their own ``NotPermitted`` errors from ``refusal``; the API, the dashboard's buttons and
    admin actions ask the same question, so a button never shows for a refused action.
    """
    return not refusal(user, permission, twin)


def twins_where(user, permission: str | None) -> QuerySet[Twin]:
    """The twins on whose objects ``may(user, permission, twin)`` holds, as one query (for
    lists: which rows get an action button)."""
    if refusal_of_user(user, permission):
        return Twin.objects.none()
    return operable_twins(user)


def refusal_of_user(user, permission: str | None) -> str:
    """The twin-independent half of ``refusal``: an active user holding ``permission``."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "an active, signed-in user is required"
    if permission and not user.has_perm(permission):
        return f"{user.get_username()} lacks {permission}"
    return ""


def refusal(user, permission: str | None, twin) -> str:
    """Why ``may(user, permission, twin)`` is False, as a sentence; ``""`` when it is True."""
    reason = refusal_of_user(user, permission)
    if reason:
        return reason
    if not (user.has_perm("twins.operate_twin") or user.has_perm("twins.operate_twin", twin)):
        return f"{user.get_username()} may not operate twin {twin.slug}"
    return ""


def scoped(queryset: QuerySet, user, twin_field: str = "twin") -> QuerySet:
    """``queryset`` narrowed to rows whose ``twin_field`` (a lookup path, e.g. ``asset__twin``)
    is a twin ``user`` may see."""
    return queryset.filter(**{f"{twin_field}__in": visible_twins(user)})


def get_scoped_or_404(queryset: QuerySet, user, twin_field: str = "twin", **lookup) -> Model:
    """The one row of ``scoped(queryset, ...)`` matching ``lookup``; Http404 otherwise."""
    try:
        return scoped(queryset, user, twin_field).get(**lookup)
    except queryset.model.DoesNotExist as exc:
        raise Http404(f"no {queryset.model._meta.verbose_name} matches") from exc


class TwinScopedViewSetMixin:
    """DRF viewset mixin: ``get_queryset`` is ``queryset`` narrowed to the caller's twins.

    Set ``queryset`` and, when the twin is not a direct field, ``twin_field`` (a lookup path).
    Detail routes then 404 for objects outside the caller's scope, before any permission or
    state check runs.
    """

    twin_field: str = "twin"

    def get_queryset(self) -> QuerySet:
        return scoped(super().get_queryset(), self.request.user, self.twin_field)
