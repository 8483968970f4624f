"""Changes to twins, asset types and assets: every create, update and delete is audited and on
the feed, and bumps the resource's revision.

The admin (``twins.admin``), the twin API (``twins.api``), the demo's provisioning and policy
(desired state, ``twins.state.set_desired``) call these, never a plain ``save()``, so ``/diff``
and ``/snapshot`` see every change (twin.v1 / asset-type.v1 / asset.v1 as the event's data).
Each function runs in its own transaction (or joins the caller's) and locks the stored row, so
two writers cannot both pass the same ``expected_revision`` (optimistic concurrency: the API's
``If-Match``).

Errors: ``StaleRevision`` (412) when ``expected_revision`` is not the stored revision,
``InvalidTwinModel`` (400, by field) for a bad definition (unknown parent, a cycle, a parent in
another twin, a bad asset type), ``InUse`` (409) when deleting what others still refer to.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from twins.api.serializers import AssetSerializer, AssetTypeSerializer, TwinSerializer
from twins.asset_types import validate_asset_type
from twins.errors import ServiceError
from twins.ledger import record_change
from twins.models import Asset, AssetType, ChangeEvent, Twin

MAX_DEPTH = 16


class StaleRevision(ServiceError):
    """The caller's revision (If-Match) is not the stored one: re-read and try again."""

    status = 412
    title = "Precondition Failed"


class InvalidTwinModel(ServiceError):
    """A twin, asset type or asset definition is inconsistent; ``errors`` maps field → list."""

    status = 400
    title = "Invalid definition"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class InUse(ServiceError):
    """A resource still referred to (an asset type with assets, an asset with children)."""

    status = 409
    title = "Conflict"


def twin_state(twin: Twin) -> dict:
    """twin.v1 of ``twin`` (a plain dict)."""
    return dict(TwinSerializer(twin).data)


def asset_state(asset: Asset) -> dict:
    """asset.v1 of ``asset`` (a plain dict)."""
    return dict(AssetSerializer(asset).data)


def asset_type_state(asset_type: AssetType) -> dict:
    """asset-type.v1 of ``asset_type`` (a plain dict)."""
    return dict(AssetTypeSerializer(asset_type).data)


def save_twin(twin: Twin, *, actor, request=None, reason: str = "",
              expected_revision: int | None = None) -> ChangeEvent:
    """Create (no pk yet) or update ``twin`` and record ``twin.create``/``twin.update``.

    ``actor`` is a user or a component name (``twins.ledger.actor_label``); ``request`` adds
    its request id and address to the audit entry. Returns the change event. Raises
    ``StaleRevision`` when ``expected_revision`` is given and differs from the stored one;
    database errors (a duplicate slug: ``IntegrityError``) propagate and nothing is recorded.
    """
    return _save(twin, "twin", twin_state, lambda: twin, actor=actor, request=request,
                 reason=reason, expected_revision=expected_revision)


def save_asset_type(asset_type: AssetType, *, actor, request=None, reason: str = "",
                    expected_revision: int | None = None) -> ChangeEvent:
    """Create or update ``asset_type`` (validated: ``InvalidTwinModel``) and record
    ``asset_type.create``/``asset_type.update``; assets of the type keep ``kind`` equal to
    its ``base_kind``."""
    try:
        validate_asset_type(asset_type)
    except ValidationError as exc:
        raise InvalidTwinModel(exc.message_dict) from exc
    with transaction.atomic():
        event = _save(asset_type, "asset_type", asset_type_state, lambda: None, actor=actor,
                      request=request, reason=reason, expected_revision=expected_revision)
        for asset in asset_type.assets.exclude(kind=asset_type.base_kind).select_related(
                "twin"):
            asset.kind = asset_type.base_kind
            save_asset(asset, actor=actor, request=request,
                       reason=f"asset type {asset_type.slug} is now a {asset_type.base_kind}")
        return event


def _check_asset(asset: Asset) -> None:
    errors: dict[str, list[str]] = {}
    if asset.asset_type_id is None:  # untyped: the built-in type of its kind (migration 0004)
        asset.asset_type = AssetType.objects.filter(slug=asset.kind).first()
    if asset.asset_type_id is not None:
        asset.kind = AssetType.objects.values_list("base_kind", flat=True).get(
            pk=asset.asset_type_id)
    if asset.parent_id is not None:
        parent = Asset.objects.filter(pk=asset.parent_id).values("twin_id", "parent_id").first()
        seen, node, depth = {asset.pk}, asset.parent_id, 0
        if parent is None:
            errors["parent"] = [f"no asset {asset.parent_id}"]
        elif parent["twin_id"] != asset.twin_id:
            errors["parent"] = ["must be an asset of the same twin"]
        while not errors and node is not None:
            if node in seen:
                errors["parent"] = ["would make the hierarchy a cycle"]
            depth += 1
            if depth > MAX_DEPTH:
                errors["parent"] = [f"the hierarchy may be at most {MAX_DEPTH} levels deep"]
            seen.add(node)
            node = Asset.objects.filter(pk=node).values_list("parent_id", flat=True).first()
    from twins.asset_types import metric_errors

    if problems := metric_errors(asset.metrics):
        errors["metrics"] = problems
    if errors:
        raise InvalidTwinModel(errors)


def save_asset(asset: Asset, *, actor, request=None, reason: str = "",
               expected_revision: int | None = None) -> ChangeEvent:
    """Create or update ``asset`` and record ``asset.create``/``asset.update`` on its twin.

    An asset given no type gets the built-in type named after its ``kind`` (when it exists);
    its ``kind`` follows its type's ``base_kind``; its parent must be an asset of the same twin
    and must not make a cycle (``InvalidTwinModel``); ``StaleRevision`` as ``save_twin``.
    """
    with transaction.atomic():
        if asset.parent_id is not None:
            # Hierarchy edits of one twin take turns, so two re-parentings cannot each pass
            # the cycle check and together close a loop. NO KEY UPDATE: the ledger's KEY
            # SHARE lock on the twin (record_change) is not blocked by it.
            Twin.objects.select_for_update(no_key=True).filter(pk=asset.twin_id).exists()
        _check_asset(asset)
        return _save(asset, "asset", asset_state, lambda: asset.twin, actor=actor,
                     request=request, reason=reason, expected_revision=expected_revision)


def _save(obj, resource_type: str, state, twin_of, *, actor, request, reason,
          expected_revision) -> ChangeEvent:
    with transaction.atomic():
        stored = (type(obj).objects.select_for_update(no_key=True).filter(pk=obj.pk).first()
                  if obj.pk is not None else None)
        if expected_revision is not None and (stored is None
                                              or stored.revision != expected_revision):
            raise StaleRevision(
                f"{resource_type} {obj.pk} is at revision "
                f"{stored.revision if stored else 'none'}, not {expected_revision}")
        before = state(stored) if stored is not None else None
        obj.revision = stored.revision + 1 if stored is not None else 1
        obj.save()
        created = before is None
        return record_change(
            actor=actor, action=f"{resource_type}." + ("create" if created else "update"),
            resource_type=resource_type, resource_id=obj.pk,
            operation="created" if created else "updated", before=before, after=state(obj),
            twin=twin_of(), reason=reason, request=request)


def _check_revision(obj, resource_type: str, expected_revision: int | None) -> None:
    if expected_revision is not None and obj.revision != expected_revision:
        raise StaleRevision(f"{resource_type} {obj.pk} is at revision {obj.revision}, "
                            f"not {expected_revision}")


def delete_asset(asset: Asset, *, actor, request=None, reason: str = "",
                 expected_revision: int | None = None) -> ChangeEvent:
    """Delete ``asset`` (and, by cascade, its telemetry) and record ``asset.delete``.

    Raises ``InUse`` while other assets have it as their parent, ``StaleRevision`` as above.
    """
    with transaction.atomic():
        asset = Asset.objects.select_for_update().select_related("twin").get(pk=asset.pk)
        _check_revision(asset, "asset", expected_revision)
        if children := sorted(asset.children.values_list("slug", flat=True)):
            raise InUse(f"asset {asset} is the parent of {', '.join(children)}: "
                        "move or delete them first")
        before, pk, twin = asset_state(asset), asset.pk, asset.twin
        asset.delete()
        return record_change(actor=actor, action="asset.delete", resource_type="asset",
                             resource_id=pk, operation="deleted", before=before, after=None,
                             twin=twin, reason=reason, request=request)


def delete_asset_type(asset_type: AssetType, *, actor, request=None, reason: str = "",
                      expected_revision: int | None = None) -> ChangeEvent:
    """Delete an asset type no asset uses (``InUse`` otherwise) and record
    ``asset_type.delete``."""
    with transaction.atomic():
        asset_type = AssetType.objects.select_for_update().get(pk=asset_type.pk)
        _check_revision(asset_type, "asset_type", expected_revision)
        if used := asset_type.assets.count():
            raise InUse(f"asset type {asset_type.slug} is used by {used} asset(s)")
        before, pk = asset_type_state(asset_type), asset_type.pk
        asset_type.delete()
        return record_change(actor=actor, action="asset_type.delete",
                             resource_type="asset_type", resource_id=pk, operation="deleted",
                             before=before, after=None, twin=None, reason=reason,
                             request=request)


def delete_twin(twin: Twin, *, actor, request=None, reason: str = "",
                expected_revision: int | None = None) -> ChangeEvent:
    """Delete ``twin`` with its assets (children before parents), recording each asset's
    deletion and then the twin's.

    The twin's own event carries no twin reference (the row is gone; ``ChangeEvent.twin`` is
    SET_NULL), so it is visible to admins and the actor under the feed's twin-less rule.
    """
    with transaction.atomic():
        twin = Twin.objects.select_for_update().get(pk=twin.pk)
        _check_revision(twin, "twin", expected_revision)
        remaining = list(twin.assets.all())
        while remaining:
            parents = {a.parent_id for a in remaining}
            leaves = [a for a in remaining if a.pk not in parents]
            if not leaves:
                raise InUse(f"the assets of twin {twin.slug} form a cycle")
            for asset in leaves:
                delete_asset(asset, actor=actor, request=request, reason=reason)
            remaining = [a for a in remaining if a.pk in parents]
        before, pk = twin_state(twin), twin.pk
        twin.delete()
        return record_change(actor=actor, action="twin.delete", resource_type="twin",
                             resource_id=pk, operation="deleted", before=before, after=None,
                             twin=None, reason=reason, request=request)
