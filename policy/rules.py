"""The rules a policy document sets (policy.v1) and how an untrusted document is handled.

A policy document's body is a JSON object::

    {
      "schema": "opstwin.policy.v1",
      "twin": "skab",                     # must equal the twin it is stored for
      "version": 3,                       # must equal the stored version
      "actions": {"reduce_load": {"risk": "MEDIUM", "rollback": "restore_load"}, ...},
      "forbidden": ["disable_interlock", ...],
      "thresholds": {"auto_execute": 0.90, "approval": 0.70, "high_risk_max_breach": 0.10},
      "interlocks": [{"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95,
                      "max_age_s": 60, "guards": ["reduce_load"], "asset": "optional-slug"}],
      "approvals": {"LOW": {"approvers": 1, "ttl_s": 14400}, ..., "CRITICAL": {...}},
      "evidence": {"tolerance_sigmas": 4.0},
      "verification": {"window_s": 60, "max_outside_share": 0.5, "min_samples": 3}
    }

Every section is optional; missing ones take ``default_rules()`` (catalogue risk levels, the
built-in forbidden list, ``POLICY_AUTO_EXECUTE_AT``/``POLICY_APPROVAL_AT``, the approval table
below). Floors that no document can lower: at least one approver, two for CRITICAL, and
forbidden actions stay forbidden.

The documented rule for an untrusted policy (unsigned, badly signed, unparseable, missing, or
a rollback below the high-water mark): no automation at all: the decision can never be
``auto_execute`` (it becomes ``require_approval``), and an untrusted document may only make
things stricter (``tighten``): its forbidden actions and interlocks apply (they can only deny),
its risk levels only raise the catalogue's, its approval counts only rise and TTLs only shrink;
its thresholds are ignored.

Interlocks are kept as raw dicts here and evaluated fail-closed in ``policy.interlocks``, so a
malformed interlock denies the actions it guards instead of invalidating the document.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from policy.actions import CATALOGUE, FORBIDDEN, risk_of
from policy.choices import RiskLevel

SCHEMA = "opstwin.policy.v1"
RISK_ORDER = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH, RiskLevel.CRITICAL]
MAX_TTL_S = 7 * 24 * 3600


class PolicyInvalid(ValueError):
    """A policy body that is not a valid policy.v1 document (message names the field)."""


@dataclass(frozen=True)
class ApprovalRule:
    """Approvers needed (distinct, never the proposer) and how long an approval stays valid."""

    approvers: int
    ttl_s: int


@dataclass(frozen=True)
class VerificationRule:
    """Post-execution check: ``window_s`` seconds of telemetry compared with the p5–p95 band;
    a breach when more than ``max_outside_share`` of at least ``min_samples`` readings fall
    outside it."""

    window_s: float = 60.0
    max_outside_share: float = 0.5
    min_samples: int = 3


DEFAULT_APPROVALS = {
    RiskLevel.LOW: ApprovalRule(1, 4 * 3600),
    RiskLevel.MEDIUM: ApprovalRule(1, 3600),
    RiskLevel.HIGH: ApprovalRule(1, 1800),
    RiskLevel.CRITICAL: ApprovalRule(2, 900),
}
MIN_APPROVERS = {RiskLevel.LOW: 1, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 1, RiskLevel.CRITICAL: 2}


@dataclass(frozen=True)
class PolicyRules:
    """Everything the decision, approval, execution and verification steps read from policy."""

    risk: Mapping[str, str] = field(default_factory=dict)
    rollbacks: Mapping[str, str] = field(default_factory=dict)
    forbidden: frozenset[str] = FORBIDDEN
    auto_execute_at: float = 0.90
    approval_at: float = 0.70
    high_risk_max_breach: float = 0.10
    interlocks: tuple[Any, ...] = ()
    approvals: Mapping[str, ApprovalRule] = field(default_factory=lambda: dict(DEFAULT_APPROVALS))
    tolerance_sigmas: float = 4.0
    verification: VerificationRule = VerificationRule()

    def risk_of(self, action: str, default: str | None = None) -> str:
        """Risk level of ``action``: the document's, else ``default`` (the asset type's,
        ``policy.catalogue.type_risk``), else the catalogue's (unknown: CRITICAL)."""
        return self.risk.get(action) or default or risk_of(action)

    def approval_rule(self, risk: str) -> ApprovalRule:
        """The approval rule of ``risk`` (CRITICAL's for an unknown level)."""
        return self.approvals.get(risk) or self.approvals[RiskLevel.CRITICAL]

    def rollback_of(self, action: str) -> str:
        """The action that undoes ``action`` ('' when none: rollback needs a human)."""
        if action in self.rollbacks:
            return self.rollbacks[action]
        spec = CATALOGUE.get(action)
        return spec.rollback if spec else ""


def default_rules() -> PolicyRules:
    """Rules with no document: catalogue, built-in forbidden list, thresholds from settings."""
    return PolicyRules(auto_execute_at=settings.POLICY_AUTO_EXECUTE_AT,
                       approval_at=settings.POLICY_APPROVAL_AT)


def parse_body(text: str) -> dict:
    """The JSON object of a stored body. Raises PolicyInvalid for anything else."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise PolicyInvalid(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise PolicyInvalid("body must be a JSON object")
    return body


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyInvalid(f"{where} must be a finite number")
    if not low <= value <= high:
        raise PolicyInvalid(f"{where} must lie in [{low}, {high}]")
    return float(value)


def _section(body: dict, name: str, kind: type) -> Any:
    value = body.get(name, kind())
    if not isinstance(value, kind):
        raise PolicyInvalid(f"{name} must be a JSON {'object' if kind is dict else 'array'}")
    return value


def _actions(body: dict) -> tuple[dict[str, str], dict[str, str]]:
    risk, rollbacks = {}, {}
    for action, spec in _section(body, "actions", dict).items():
        if not isinstance(spec, dict) or spec.get("risk") not in RISK_ORDER:
            raise PolicyInvalid(f"actions.{action}.risk must be one of {RISK_ORDER}")
        risk[action] = spec["risk"]
        if "rollback" in spec:
            if not isinstance(spec["rollback"], str):
                raise PolicyInvalid(f"actions.{action}.rollback must be an action name")
            rollbacks[action] = spec["rollback"]
    return risk, rollbacks


def _approvals(body: dict) -> dict[str, ApprovalRule]:
    rules = dict(DEFAULT_APPROVALS)
    for level, spec in _section(body, "approvals", dict).items():
        if level not in RISK_ORDER or not isinstance(spec, dict):
            raise PolicyInvalid(f"approvals.{level}: unknown risk level or not an object")
        approvers = _number(spec.get("approvers", rules[level].approvers),
                            f"approvals.{level}.approvers", 1, 10)
        ttl = _number(spec.get("ttl_s", rules[level].ttl_s), f"approvals.{level}.ttl_s", 1,
                      MAX_TTL_S)
        rules[level] = ApprovalRule(max(int(approvers), MIN_APPROVERS[level]), int(ttl))
    return rules


def _verification(body: dict) -> VerificationRule:
    spec, base = _section(body, "verification", dict), VerificationRule()
    return VerificationRule(
        window_s=_number(spec.get("window_s", base.window_s), "verification.window_s", 1, 86400),
        max_outside_share=_number(spec.get("max_outside_share", base.max_outside_share),
                                  "verification.max_outside_share", 0, 1),
        min_samples=int(_number(spec.get("min_samples", base.min_samples),
                                "verification.min_samples", 1, 100_000)),
    )


def rules_from_body(body: dict) -> PolicyRules:
    """Rules of a trusted (verified) body over the defaults. Raises PolicyInvalid."""
    thresholds, base = _section(body, "thresholds", dict), default_rules()
    auto_at = _number(thresholds.get("auto_execute", base.auto_execute_at),
                      "thresholds.auto_execute", 0, 1)
    approval_at = _number(thresholds.get("approval", base.approval_at), "thresholds.approval",
                          0, 1)
    if approval_at > auto_at:
        raise PolicyInvalid("thresholds.approval must not exceed thresholds.auto_execute")
    forbidden = _section(body, "forbidden", list)
    if not all(isinstance(a, str) for a in forbidden):
        raise PolicyInvalid("forbidden must list action names")
    risk, rollbacks = _actions(body)
    evidence = _section(body, "evidence", dict)
    return PolicyRules(
        risk=risk, rollbacks=rollbacks, forbidden=FORBIDDEN | frozenset(forbidden),
        auto_execute_at=auto_at, approval_at=approval_at,
        high_risk_max_breach=_number(thresholds.get("high_risk_max_breach", 0.10),
                                     "thresholds.high_risk_max_breach", 0, 1),
        interlocks=tuple(_section(body, "interlocks", list)), approvals=_approvals(body),
        tolerance_sigmas=_number(evidence.get("tolerance_sigmas", base.tolerance_sigmas),
                                 "evidence.tolerance_sigmas", 0.1, 100),
        verification=_verification(body),
    )


def _stricter_risk(base: PolicyRules, actions: Any) -> dict[str, str]:
    risk = dict(base.risk)
    for action, spec in (actions.items() if isinstance(actions, dict) else []):
        level = spec.get("risk") if isinstance(spec, dict) else None
        if level in RISK_ORDER and RISK_ORDER.index(level) > RISK_ORDER.index(
                base.risk_of(action)):
            risk[action] = level
    return risk


def _stricter_approvals(base: PolicyRules, approvals: Any) -> dict[str, ApprovalRule]:
    rules = dict(base.approvals)
    for level, spec in (approvals.items() if isinstance(approvals, dict) else []):
        if level not in rules or not isinstance(spec, dict):
            continue
        try:
            tighter = _approvals({"approvals": {level: spec}})[level]
        except PolicyInvalid:
            continue
        rules[level] = ApprovalRule(max(rules[level].approvers, tighter.approvers),
                                    min(rules[level].ttl_s, tighter.ttl_s))
    return rules


def tighten(base: PolicyRules, body: Any) -> PolicyRules:
    """Apply only the restrictive parts of an untrusted ``body`` to ``base``; never raises.

    Forbidden actions and interlocks are added, risk levels and approver counts may only rise,
    TTLs only shrink. Everything else (thresholds, rollbacks, lower risk levels) is ignored.
    """
    if not isinstance(body, dict):
        return base
    forbidden = body.get("forbidden")
    extra = frozenset(a for a in forbidden if isinstance(a, str)) if isinstance(
        forbidden, list) else frozenset()
    interlocks = body.get("interlocks")
    return replace(
        base, forbidden=base.forbidden | extra, risk=_stricter_risk(base, body.get("actions")),
        interlocks=base.interlocks + (tuple(interlocks) if isinstance(interlocks, list) else ()),
        approvals=_stricter_approvals(base, body.get("approvals")),
    )
