"""Changes to twins and assets: every create, update and delete is audited and on the feed.

The admin (``twins.admin``), the demo's provisioning and any future API call these, never a
plain ``save()``, so ``/diff`` and ``/snapshot`` see every change (twin.v1 / asset.v1 as the
event's data). Each function runs in its own transaction (or joins the caller's).
"""

from __future__ import annotations

from django.db import transaction

from twins.api.serializers import AssetSerializer, TwinSerializer
from twins.ledger import record_change
from twins.models import Asset, ChangeEvent, Twin


def twin_state(twin: Twin) -> dict:
    """twin.v1 of ``twin`` (a plain dict)."""
    return dict(TwinSerializer(twin).data)


def asset_state(asset: Asset) -> dict:
    """asset.v1 of ``asset`` (a plain dict)."""
    return dict(AssetSerializer(asset).data)


def save_twin(twin: Twin, *, actor, request=None, reason: str = "") -> ChangeEvent:
    """Create (no pk yet) or update ``twin`` and record ``twin.create``/``twin.update``.

    ``actor`` is a user or a component name (``twins.ledger.actor_label``); ``request`` adds
    its request id and address to the audit entry. Returns the change event. Database errors
    (a duplicate slug: ``IntegrityError``) propagate and nothing is recorded.
    """
    return _save(twin, "twin", twin_state, lambda: twin, actor=actor, request=request,
                 reason=reason)


def save_asset(asset: Asset, *, actor, request=None, reason: str = "") -> ChangeEvent:
    """Create or update ``asset`` and record ``asset.create``/``asset.update`` on its twin."""
    return _save(asset, "asset", asset_state, lambda: asset.twin, actor=actor,
                 request=request, reason=reason)


def _save(obj, resource_type: str, state, twin_of, *, actor, request, reason) -> ChangeEvent:
    with transaction.atomic():
        stored = type(obj).objects.filter(pk=obj.pk).first() if obj.pk is not None else None
        before = state(stored) if stored is not None else None
        obj.save()
        created = before is None
        return record_change(
            actor=actor, action=f"{resource_type}." + ("create" if created else "update"),
            resource_type=resource_type, resource_id=obj.pk,
            operation="created" if created else "updated", before=before, after=state(obj),
            twin=twin_of(), reason=reason, request=request)


def delete_asset(asset: Asset, *, actor, request=None, reason: str = "") -> ChangeEvent:
    """Delete ``asset`` (and, by cascade, its telemetry) and record ``asset.delete``."""
    with transaction.atomic():
        before, pk, twin = asset_state(asset), asset.pk, asset.twin
        asset.delete()
        return record_change(actor=actor, action="asset.delete", resource_type="asset",
                             resource_id=pk, operation="deleted", before=before, after=None,
                             twin=twin, reason=reason, request=request)


def delete_twin(twin: Twin, *, actor, request=None, reason: str = "") -> ChangeEvent:
    """Delete ``twin`` with its assets, recording each asset's deletion and then the twin's.

    The twin's own event carries no twin reference (the row is gone; ``ChangeEvent.twin`` is
    SET_NULL), so it is visible to admins and the actor under the feed's twin-less rule.
    """
    with transaction.atomic():
        for asset in list(twin.assets.all()):
            delete_asset(asset, actor=actor, request=request, reason=reason)
        before, pk = twin_state(twin), twin.pk
        twin.delete()
        return record_change(actor=actor, action="twin.delete", resource_type="twin",
                             resource_id=pk, operation="deleted", before=before, after=None,
                             twin=None, reason=reason, request=request)
