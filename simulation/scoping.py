"""Which simulation runs a user may see (the one queryset every run view starts from)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from simulation.models import SimulationRun
from twins.scoping import visible_twins


def visible_runs(user) -> QuerySet[SimulationRun]:
    """Runs on assets of twins ``user`` may see (``twins.view_twin``), plus runs without an
    asset that ``user`` created; someone who sees every twin (global ``twins.view_twin``)
    sees every asset-less run too."""
    if not user.is_authenticated:
        return SimulationRun.objects.none()
    where = Q(asset__twin__in=visible_twins(user)) | Q(asset__isnull=True, created_by=user)
    if user.has_perm("twins.view_twin"):
        where |= Q(asset__isnull=True)
    return SimulationRun.objects.filter(where).select_related("asset__twin")
