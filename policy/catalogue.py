"""The action catalogue as agents see it (action-catalogue.v1), and parameter validation.

``policy.actions.CATALOGUE`` is the one definition; this module renders it per asset kind, and
per twin as that twin's active policy resolves it (risk and rollback overrides, forbidden
actions, the interlocks guarding each action), and checks a proposal's action and parameters
against it before anything is simulated or stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from policy import interlocks as interlock_rules
from policy.actions import CATALOGUE, ActionSpec
from policy.rules import PolicyRules, default_rules
from twins.choices import AssetKind


def actions_for(kind: str) -> dict[str, ActionSpec]:
    """The catalogue's actions for assets of ``kind`` (rollback-only ones included)."""
    return {name: spec for name, spec in CATALOGUE.items() if kind in spec.kinds}


def offered_actions(asset) -> dict[str, ActionSpec]:
    """The actions that may be sent to ``asset``: its kind's, narrowed to the ones its asset
    type lists (``AssetType.actions``; an empty list offers them all), plus the rollbacks of
    those offered (a rollback must always be possible)."""
    actions = actions_for(asset.kind)
    listed = {a["action"] for a in asset.asset_type.actions} if asset.asset_type_id else set()
    if not listed:
        return actions
    keep = listed | {CATALOGUE[n].rollback for n in listed if n in CATALOGUE}
    return {name: spec for name, spec in actions.items() if name in keep}


def declared_effect(asset, action: str) -> dict | None:
    """The effect on metrics ``asset``'s type declares for ``action`` (``simulation.engine.
    effects`` shape: ``{"effects": [{"metrics": [...], "mode": ..., "amount": ...}]}``), used
    by the generic what-if model; None: the engine's default (``EFFECTS``)."""
    if not asset.asset_type_id:
        return None
    return next((a.get("effect") for a in asset.asset_type.actions
                 if a.get("action") == action), None)


def type_risk(asset, action: str) -> str | None:
    """The risk level ``asset``'s type gives ``action`` (None: the catalogue's default)."""
    if not asset.asset_type_id:
        return None
    return next((a.get("risk_level") for a in asset.asset_type.actions
                 if a.get("action") == action), None)


def asset_type_errors(asset_type) -> dict[str, list[str]]:
    """``twins.asset_types`` validator: each listed action is in the catalogue for the type's
    base kind, proposable, listed once, not forbidden, with a known risk level."""
    from policy.actions import FORBIDDEN
    from policy.choices import RiskLevel

    problems, seen = [], set()
    for item in asset_type.actions:
        name, risk = item["action"], item.get("risk_level")
        if name in FORBIDDEN:
            problems.append(f"{name!r} is forbidden everywhere")
        elif problem := action_errors(asset_type.base_kind, name):
            problems.extend(problem)
        if name in seen:
            problems.append(f"{name!r} is listed twice")
        seen.add(name)
        if risk is not None and risk not in RiskLevel.values:
            problems.append(f"{name!r}: risk_level must be one of {list(RiskLevel.values)}")
        if unknown := sorted(set(item) - {"action", "risk_level", "description", "effect"}):
            problems.append(f"{name!r}: unknown keys {unknown}")
    return {"actions": problems} if problems else {}


@cache
def _validator(action: str) -> Draft202012Validator:
    return Draft202012Validator(CATALOGUE[action].parameters)


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def _field_of(error) -> list[str]:
    """The parameter names a jsonschema error is about ([] for the object as a whole)."""
    if error.absolute_path:
        return [str(error.absolute_path[0])]
    if error.validator == "required":
        return [name for name in error.validator_value if name not in error.instance]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [name for name in error.instance if name not in known]
    return []


def parameter_errors(action: str, parameters: Any) -> dict[str, list[str]]:
    """Violations of ``action``'s parameter schema, keyed by parameter name.

    Returns ``{}`` when valid; ``{"fraction": ["1e+16 is greater than the maximum of 1"]}``
    and the like otherwise; problems with the object as a whole (not an object) are keyed
    ``"non_field_errors"``. Non-finite numbers (NaN, ±Infinity) are refused anywhere. Raises
    ``KeyError`` for an action not in the catalogue.
    """
    found: dict[str, list[str]] = {}
    if isinstance(parameters, dict):
        for name, value in parameters.items():
            if _non_finite(value):
                found.setdefault(str(name), []).append("must be a finite number")
    for error in _validator(action).iter_errors(parameters):
        for name in _field_of(error) or ["non_field_errors"]:
            if error.validator == "additionalProperties":
                message = "not a parameter of this action"
            elif error.validator == "required":
                message = "this parameter is required"
            else:
                message = error.message
            found.setdefault(name, []).append(message)
    return found


def asset_action_errors(asset, action: str) -> list[str]:
    """Why ``action`` may not be proposed on ``asset`` ([] when it may): its kind's catalogue
    (``action_errors``), then its asset type's list (``offered_actions``)."""
    if problems := action_errors(asset.kind, action):
        return problems
    offered = offered_actions(asset)
    if action not in offered:
        names = sorted(n for n, s in offered.items() if s.proposable)
        return [f"{action!r} is not offered on asset type {asset.asset_type.slug}; "
                f"one of {names}"]
    return []


def action_errors(kind: str, action: str) -> list[str]:
    """Why ``action`` may not be proposed on an asset of ``kind`` ([] when it may)."""
    offered = sorted(n for n, s in actions_for(kind).items() if s.proposable)
    spec = CATALOGUE.get(action)
    if spec is None or kind not in spec.kinds:
        return [f"{action!r} is not in the action catalogue for {kind} assets; "
                f"one of {offered}"]
    if not spec.proposable:
        return [f"{action!r} is a rollback action, sent only by a rollback; one of {offered}"]
    return []


def _interlock_json(interlock: Any) -> dict:
    if isinstance(interlock, dict):
        return {k: v for k, v in interlock.items() if k != "guards"}
    return {"invalid": repr(interlock)[:200]}


def entry(name: str, rules: PolicyRules | None = None, type_risk: str | None = None,
          effect: dict | None = None) -> dict:
    """One action of the catalogue (action-catalogue.v1 ``$defs/action``).

    Without ``rules``: the catalogue's defaults. With a twin's ``rules``: its risk level and
    rollback, whether it forbids the action, and the interlocks that guard the action.
    ``type_risk`` is an asset type's risk level for it (the policy document's still wins),
    ``effect`` the effect on metrics the type declares for it.
    """
    spec = CATALOGUE[name]
    resolved = rules or default_rules()
    body = {"name": name, "description": spec.description, "parameters": spec.parameters,
            "risk_level": str(resolved.risk_of(name, type_risk)),
            "rollback": resolved.rollback_of(name) or None, "proposable": spec.proposable}
    if effect is not None:
        body["effect"] = effect
    if rules is not None:
        body["forbidden"] = name in rules.forbidden
        body["interlocks"] = [_interlock_json(i) for i in rules.interlocks
                              if interlock_rules.guards(i, name)]
    return body


def kinds_catalogue() -> dict[str, list[dict]]:
    """Every asset kind's actions with the catalogue's defaults."""
    return {kind: [entry(name) for name in actions_for(kind)] for kind in AssetKind.values}


def twin_catalogue(twin, assets: Iterable) -> dict:
    """``$defs/twin``: the actions for the kinds of ``assets`` (the twin's), as the twin's
    active policy resolves them (``policy.services.documents.active_policy``)."""
    from policy.services.documents import active_policy

    policy = active_policy(twin)
    by_kind: dict[str, list[str]] = {}
    by_type: dict[str, list] = {}
    for asset in assets:
        by_kind.setdefault(asset.kind, []).append(asset.slug)
        if asset.asset_type_id:
            by_type.setdefault(asset.asset_type.slug, []).append(asset)
    types = {}
    for slug, typed in sorted(by_type.items()):
        first = typed[0]
        types[slug] = {"base_kind": first.kind, "assets": sorted(a.slug for a in typed),
                       "actions": [entry(n, policy.rules, type_risk(first, n),
                                         declared_effect(first, n))
                                   for n in offered_actions(first)]}
    return {
        "policy": policy.summary() | {"reason": policy.reason or ""},
        "forbidden": sorted(policy.rules.forbidden),
        "kinds": {kind: {"assets": sorted(slugs),
                         "actions": [entry(n, policy.rules) for n in actions_for(kind)]}
                  for kind, slugs in sorted(by_kind.items())},
        "types": types,
    }


def catalogue_document(twins) -> dict:
    """action-catalogue.v1 for ``twins`` (a queryset of the twins the caller may see)."""
    from twins.models import Asset

    assets: dict[int, list] = {}
    for asset in Asset.objects.filter(twin__in=twins).select_related("asset_type").only(
            "twin_id", "slug", "kind", "asset_type", "asset_type__slug", "asset_type__actions"):
        assets.setdefault(asset.twin_id, []).append(asset)
    return {"kinds": kinds_catalogue(),
            "twins": {twin.slug: twin_catalogue(twin, assets.get(twin.pk, []))
                      for twin in twins.order_by("slug")}}


def openapi_schema(schema: dict) -> dict:
    """A catalogue parameter schema in OpenAPI 3.0's dialect (what drf-spectacular emits):
    numeric ``exclusiveMinimum``/``exclusiveMaximum`` become the bound plus ``true``, ``unit``
    becomes ``x-unit`` and ``examples`` the first ``example``."""
    out: dict = {}
    for key, value in schema.items():
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out[{"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}[key]] = value
            out[key] = True
        elif key == "unit":
            out["x-unit"] = value
        elif key == "examples":
            out["example"] = value[0]
        elif key == "properties":
            out[key] = {name: openapi_schema(spec) for name, spec in value.items()}
        else:
            out[key] = value
    return out


def proposal_request_branches() -> list[dict]:
    """One OpenAPI branch per proposable action for a proposal body's ``oneOf``: the action's
    name and its parameters' schema (required when the action has required parameters)."""
    branches = []
    for name, spec in CATALOGUE.items():
        if not spec.proposable:
            continue
        branch = {"type": "object", "title": name, "properties": {
            # a pattern, not a one-value enum: drf-spectacular's enum hook would merge it
            "action": {"type": "string", "pattern": f"^{name}$"},
            "parameters": openapi_schema(spec.parameters)}}
        if spec.parameters.get("required"):
            branch["required"] = ["parameters"]
        branches.append(branch)
    return branches
