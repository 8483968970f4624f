"""Which feed events a caller may see (scope) and wants to see (filter), in SQL and in memory.

The same rule has two forms so that ``/diff`` (SQL) and the live hub (in memory, one check per
subscriber per event) can never disagree: an event is visible when its twin is one the caller
may view (``twins.scoping.visible_twins``: global or per-object ``twins.view_twin`` from
django-guardian). An event without a twin (e.g. a simulation run made without an asset) is
visible only to its actor and to admins (the admin role or a superuser,
``twins.roles.role_of``): its inputs and result belong to whoever asked for it, and no twin
grant scopes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from django.db.models import Q

from twins.choices import Role
from twins.roles import role_of
from twins.scoping import visible_twins


class Filterable(Protocol):
    """What scope and filter checks read from an event (``aiw.feed.FeedItem``)."""

    type: str
    resource_type: str
    twin_id: int | None
    twin: str | None
    actor: str


@dataclass(frozen=True)
class Scope:
    """The twins a caller may see: all of them, or the ids in ``twin_ids``. Twin-less events:
    all of them when ``every_twinless`` (admins), else those whose actor is ``actor`` (the
    caller's username; "" for nobody)."""

    all_twins: bool
    twin_ids: frozenset[int] = frozenset()
    actor: str = ""
    every_twinless: bool = False

    def q(self) -> Q:
        """The rule as a ChangeEvent filter."""
        if self.every_twinless:
            twinless = Q(twin__isnull=True)
        elif self.actor:
            twinless = Q(twin__isnull=True, actor=self.actor)
        else:
            twinless = Q(pk__in=[])
        twinned = Q(twin__isnull=False) if self.all_twins else Q(twin_id__in=sorted(self.twin_ids))
        return twinless | twinned

    def allows(self, item: Filterable) -> bool:
        """The rule for one event in memory."""
        if item.twin_id is None:
            return self.every_twinless or (bool(self.actor) and item.actor == self.actor)
        return self.all_twins or item.twin_id in self.twin_ids


def scope_for(user) -> Scope:
    """The Scope of ``user`` now (anonymous users see nothing)."""
    if not user.is_authenticated:
        return Scope(all_twins=False)
    actor, admin = user.get_username(), role_of(user) == Role.ADMIN
    if user.has_perm("twins.view_twin"):
        return Scope(all_twins=True, actor=actor, every_twinless=admin)
    return Scope(all_twins=False, actor=actor, every_twinless=admin,
                 twin_ids=frozenset(visible_twins(user).values_list("id", flat=True)))


@dataclass(frozen=True)
class FeedFilter:
    """A caller's filters: event ``types`` (matching ``type`` or ``resource_type``; empty means
    all) and one ``twin`` slug (None means all)."""

    types: frozenset[str] = frozenset()
    twin: str | None = None

    @classmethod
    def parse(cls, types: str | None, twin: str | None) -> FeedFilter:
        """From query parameters: ``types`` comma-separated, ``twin`` a slug ('' = none)."""
        names = frozenset(t.strip() for t in (types or "").split(",") if t.strip())
        return cls(types=names, twin=twin or None)

    def q(self) -> Q:
        """The filter as a ChangeEvent filter."""
        query = Q()
        if self.types:
            query &= Q(type__in=sorted(self.types)) | Q(resource_type__in=sorted(self.types))
        if self.twin:
            query &= Q(twin__slug=self.twin)
        return query

    def matches(self, item: Filterable) -> bool:
        """The filter for one event in memory."""
        if self.types and item.type not in self.types and item.resource_type not in self.types:
            return False
        return self.twin is None or item.twin == self.twin
