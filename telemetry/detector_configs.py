"""Changing which detector watches an asset kind: audited and on the feed (detector-config.v1).

Django admin (``telemetry.admin.DetectorConfigAdmin``) saves through ``save_config``, never a
plain ``save()``. A change takes effect at each asset's next detection run: calibrations fitted
under other settings are re-fitted on next use (``telemetry.calibration``).
"""

from __future__ import annotations

from django.db import transaction

from telemetry.models import DetectorConfig
from twins.ledger import record_change
from twins.models import ChangeEvent


def config_state(config: DetectorConfig) -> dict:
    """detector-config.v1 of ``config``."""
    return {"id": config.pk, "asset_kind": config.asset_kind, "detector": config.detector,
            "params": config.params, "calibration_rows": config.calibration_rows,
            "updated_at": config.updated_at}


def save_config(config: DetectorConfig, *, actor, request=None, reason: str = "") -> ChangeEvent:
    """Validate (``DetectorConfig.clean``: ``ValidationError`` for a detector the library would
    reject), save and record ``detector_config.create``/``.update`` (twin-less)."""
    config.clean()
    with transaction.atomic():
        stored = DetectorConfig.objects.filter(pk=config.pk).first() if config.pk else None
        before = config_state(stored) if stored is not None else None
        config.save()
        return record_change(
            actor=actor, action="detector_config." + ("create" if before is None else "update"),
            resource_type="detector_config", resource_id=config.pk,
            operation="created" if before is None else "updated", before=before,
            after=config_state(config), reason=reason, request=request)


def delete_config(config: DetectorConfig, *, actor, request=None) -> ChangeEvent:
    """Delete ``config`` (its kind falls back to the default detector) and record it."""
    with transaction.atomic():
        before, pk = config_state(config), config.pk
        config.delete()
        return record_change(actor=actor, action="detector_config.delete",
                             resource_type="detector_config", resource_id=pk,
                             operation="deleted", before=before, after=None, request=request)
