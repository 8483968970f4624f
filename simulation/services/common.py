"""Helpers shared by the simulation services: the audit call and permission checks."""

from __future__ import annotations

from simulation.errors import RunNotPermitted
from simulation.models import SimulationRun
from twins.ledger import record_change
from twins.scoping import refusal, refusal_of_user

ACTOR = "simulator"
RUN_PERMISSION = "simulation.add_simulationrun"


def serialize(run: SimulationRun) -> dict:
    """simulation.v1 JSON of ``run`` (what the feed and the audit entry carry)."""
    from simulation.api.serializers import SimulationRunSerializer

    return dict(SimulationRunSerializer(run).data)


def audit_run(run: SimulationRun, *, actor, action: str, operation: str = "updated",
              reason: str = "", request=None) -> None:
    """Record one change of ``run`` (audit entry + change event) in the caller's transaction."""
    record_change(actor=actor or ACTOR, action=action, resource_type="simulation",
                  resource_id=run.pk, operation=operation,
                  twin=run.asset.twin if run.asset_id else None, after=serialize(run),
                  reason=reason, request=request)


def is_user(actor) -> bool:
    """True for a Django user, False for a system component name (``"simulator"``) or None."""
    return hasattr(actor, "has_perm")


def run_refusal(user, asset) -> str:
    """Why ``user`` may not run (or cancel) a simulation on ``asset`` (None: no asset): it
    needs ``simulation.add_simulationrun`` and, on an asset, operate rights on its twin
    (``twins.scoping``); ``""`` when it may."""
    if asset is None:
        return refusal_of_user(user, RUN_PERMISSION)
    return refusal(user, RUN_PERMISSION, asset.twin)


def may_run(user, asset) -> bool:
    """Whether ``require_run_permission(user, asset)`` passes (for buttons)."""
    return not run_refusal(user, asset)


def require_run_permission(actor, asset) -> None:
    """Raise RunNotPermitted unless ``actor`` (a user) holds ``simulation.add_simulationrun``
    and, for a run on ``asset``, may operate its twin (``twins.scoping.may``)."""
    reason = run_refusal(actor, asset)
    if reason:
        raise RunNotPermitted(reason)
