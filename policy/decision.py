"""The policy decision (decision.v1): what happens to a proposed action, and why.

Order of checks, each one a step of the stored trace ``[{"check", "passed", "detail", ...}]``:

1. ``policy``: which document is in force and whether it is trusted (``policy.trust``);
2. ``rbac``: a human proposer needs ``policy.add_proposal`` and ``twins.operate_twin`` on the
   twin (globally or for this twin); system components propose on the twin's behalf
   → reject otherwise;
3. ``forbidden``: built-in and policy-forbidden actions → reject;
4. ``interlocks``: every interlock guarding the action must pass (``policy.interlocks``,
   fail-closed) → reject otherwise;
5. ``effect`` (an answer to an anomaly only): the what-if model must say the action moves the
   anomaly's metric; an action it has no modelled effect on cannot be expected to clear the
   anomaly, and its verification could only judge readings it did not change → analyse
   further (a human looks first);
6. ``risk``: HIGH needs a passing simulation (one that ran, with P(breach) <= the policy's
   ``high_risk_max_breach``, 0.10 by default) → analyse further otherwise;
7. ``confidence``: >= auto threshold (0.90) execute automatically, >= approval threshold (0.70)
   ask a human, below that analyse further (seed specification; a trusted policy may set
   its own thresholds);
8. ``critical``: CRITICAL risk never executes automatically: it waits for humans;
9. ``automation``: an untrusted policy never executes automatically either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.choices import Decision, RiskLevel
from policy.interlocks import InterlockResult
from policy.trust import ActivePolicy
from twins.scoping import may


@dataclass
class DecisionResult:
    """The decision, the risk level, the approval rule that applies and the ordered trace."""

    decision: str
    risk_level: str
    approvals_required: int = 1
    ttl_s: int = 3600
    trace: list[dict] = field(default_factory=list)

    def step(self, check: str, passed: bool, detail: str, **extra) -> None:
        self.trace.append({"check": check, "passed": passed, "detail": detail} | extra)


def _rbac(result: DecisionResult, proposer, twin) -> bool:
    if proposer is None:
        result.step("rbac", True, "proposed by OpsTwin (system)")
        return True
    allowed = may(proposer, "policy.add_proposal", twin)
    result.step("rbac", allowed, f"{proposer.get_username()} may propose on {twin.slug}: {allowed}")
    return allowed


def _interlocks(result: DecisionResult, interlocks: list[InterlockResult]) -> bool:
    failed = [r for r in interlocks if not r.passed]
    detail = "; ".join(r.detail for r in interlocks) or "no interlock guards this action"
    result.step("interlocks", not failed, detail, results=[r.to_json() for r in interlocks])
    return not failed


def _effect(result: DecisionResult, action: str, moves: tuple[str, bool] | None) -> bool:
    if moves is None:
        return True
    metric, moved = moves
    if moved:
        result.step("effect", True, f"the what-if model moves {metric} with {action}")
        return True
    result.step("effect", False, f"{action} has no modelled effect on {metric}, the anomaly's "
                                 f"metric: it cannot be expected to clear the anomaly")
    return False


def _risk(result: DecisionResult, policy: ActivePolicy, p_breach: float | None) -> bool:
    limit = policy.rules.high_risk_max_breach
    if result.risk_level == RiskLevel.HIGH and (p_breach is None or p_breach > limit):
        simulated = "no simulation" if p_breach is None else f"simulated {p_breach:.3f}"
        result.step("risk", False, f"HIGH risk needs a passing simulation (P(breach) <= "
                                   f"{limit}), {simulated}")
        return False
    result.step("risk", True, f"risk {result.risk_level}")
    return True


def _confidence(result: DecisionResult, policy: ActivePolicy, confidence: float) -> None:
    auto_at, approval_at = policy.rules.auto_execute_at, policy.rules.approval_at
    if confidence >= auto_at:
        result.decision = Decision.AUTO_EXECUTE
    elif confidence >= approval_at:
        result.decision = Decision.REQUIRE_APPROVAL
    else:
        result.decision = Decision.REQUIRE_ANALYSIS
    result.step("confidence", confidence >= approval_at,
                f"confidence {confidence:.3f} (auto >= {auto_at}, approval >= {approval_at})")


def _no_automation(result: DecisionResult, policy: ActivePolicy) -> None:
    if result.decision != Decision.AUTO_EXECUTE:
        return
    if result.risk_level == RiskLevel.CRITICAL:
        result.decision = Decision.REQUIRE_APPROVAL
        result.step("critical", True, "CRITICAL risk always needs human approval")
    if not policy.trusted:
        result.decision = Decision.REQUIRE_APPROVAL
        result.step("automation", False, f"policy untrusted ({policy.reason}): a human decides")


def decide(
    *, action: str, proposer, twin, confidence: float, p_breach: float | None,
    policy: ActivePolicy, interlocks: list[InterlockResult], type_risk: str | None = None,
    moves: tuple[str, bool] | None = None,
) -> DecisionResult:
    """Decide what happens to a proposal. Pure apart from the permission lookup; never raises.

    ``p_breach`` is the simulation's largest P(breach) (None when nothing was simulated);
    ``interlocks`` the results for the interlocks guarding ``action``; ``type_risk`` the
    asset type's risk level for the action (the policy document's still wins); ``moves``
    ``(metric, moved)``: the anomaly's metric and whether the simulated action moves it (None:
    no anomaly, or nothing simulated with a model that says).
    """
    risk = policy.rules.risk_of(action, type_risk)
    rule = policy.rules.approval_rule(risk)
    result = DecisionResult(Decision.REJECT, risk, rule.approvers, rule.ttl_s)
    result.step("policy", policy.trusted, policy.reason, **policy.summary())
    if not _rbac(result, proposer, twin):
        return result
    if action in policy.rules.forbidden:
        result.step("forbidden", False, f"{action} is forbidden by policy")
        return result
    result.step("forbidden", True, f"{action} is allowed")
    if not _interlocks(result, interlocks):
        return result
    if not _effect(result, action, moves) or not _risk(result, policy, p_breach):
        result.decision = Decision.REQUIRE_ANALYSIS
        return result
    _confidence(result, policy, confidence)
    _no_automation(result, policy)
    return result
