"""Asset types as data: validation of their metric, action, detector and what-if fields.

The names an asset type refers to belong to the layers above this one: actions to ``policy``
(the catalogue), detectors to ``telemetry``, what-if model families to ``simulation``. Each
of those apps registers a validator here in its ``AppConfig.ready`` (``register_validator``),
so ``AssetType.clean`` checks every name without this bottom layer importing them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from django.core.exceptions import ValidationError

METRIC_KEYS = frozenset({"name", "unit", "min", "max", "cadence_seconds", "description"})
#: ``validator(asset_type) -> {field: [messages]}``; registered by the apps above.
_validators: list[Callable] = []


def register_validator(validator: Callable) -> None:
    """Add ``validator(asset_type) -> dict[str, list[str]]`` (errors by field; ``{}`` valid)."""
    if validator not in _validators:
        _validators.append(validator)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_errors(metrics) -> list[str]:
    """Why ``metrics`` is not a list of metric definitions ([] when it is).

    Each item: ``{"name": str (1–64 chars, unique), "unit": str, "min": number, "max": number
    (min < max), "cadence_seconds": number > 0, "description": str}``, only ``name`` required.
    """
    if not isinstance(metrics, list):
        return ["must be a list of metric definitions"]
    errors, names = [], set()
    for i, metric in enumerate(metrics):
        if not isinstance(metric, dict):
            errors.append(f"[{i}] must be an object")
            continue
        name = metric.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            errors.append(f"[{i}].name must be a string of 1 to 64 characters")
        elif name in names:
            errors.append(f"[{i}].name {name!r} is declared twice")
        names.add(name)
        if unknown := sorted(set(metric) - METRIC_KEYS):
            errors.append(f"[{i}] has unknown keys {unknown}; allowed: {sorted(METRIC_KEYS)}")
        for key in ("min", "max", "cadence_seconds"):
            if key in metric and not _number(metric[key]):
                errors.append(f"[{i}].{key} must be a finite number")
        if _number(metric.get("min")) and _number(metric.get("max")) \
                and metric["min"] >= metric["max"]:
            errors.append(f"[{i}].min must be below max")
        if _number(metric.get("cadence_seconds")) and metric["cadence_seconds"] <= 0:
            errors.append(f"[{i}].cadence_seconds must be positive")
        if not isinstance(metric.get("unit", ""), str):
            errors.append(f"[{i}].unit must be a string")
    return errors


def validate_asset_type(asset_type) -> None:
    """Raise ``ValidationError`` (by field) unless ``asset_type`` is consistent.

    Checks the metric list here and the action, detector and what-if names with every
    registered validator.
    """
    errors: dict[str, list[str]] = {}
    if problems := metric_errors(asset_type.metrics):
        errors["metrics"] = problems
    if not isinstance(asset_type.actions, list) or not all(
            isinstance(a, dict) and isinstance(a.get("action"), str) for a in asset_type.actions):
        errors["actions"] = ['must be a list of {"action": name, "risk_level": level}']
    if not isinstance(asset_type.detector_params, dict):
        errors["detector_params"] = ["must be an object"]
    if not errors:
        for validator in _validators:
            for field, messages in validator(asset_type).items():
                errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def metric_bounds(asset, metric: str) -> tuple[float | None, float | None]:
    """(min, max) declared for ``metric`` of ``asset`` (None where undeclared)."""
    for spec in asset.declared_metrics:
        if spec["name"] == metric:
            return spec.get("min"), spec.get("max")
    return None, None
