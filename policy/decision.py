"""The policy decision: forbidden actions, RBAC, risk tier, then confidence (decision.v1).

Order and rules:
1. forbidden action → reject;
2. RBAC: a human proposer needs ``policy.add_proposal`` and ``twins.operate_twin`` on the
   twin (system components propose on the twin's behalf) → reject otherwise;
3. risk tier: HIGH needs a passing simulation (P(breach) <= 0.10) or it goes to analysis;
   CRITICAL always needs a human, whatever the confidence;
4. confidence: >= POLICY_AUTO_EXECUTE_AT (0.90) execute automatically, >= POLICY_APPROVAL_AT
   (0.70) ask a human, below that analyse further.
Thresholds 0.90/0.70 come from the seed specification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from policy.actions import FORBIDDEN, risk_of
from policy.choices import Decision, RiskLevel

HIGH_RISK_MAX_BREACH = 0.10


@dataclass
class DecisionResult:
    """The decision and the ordered trace of checks that produced it."""

    decision: str
    risk_level: str
    trace: list[dict] = field(default_factory=list)

    def step(self, check: str, passed: bool, detail: str) -> None:
        self.trace.append({"check": check, "passed": passed, "detail": detail})


def _rbac(result: DecisionResult, proposer, twin) -> bool:
    if proposer is None:
        result.step("rbac", True, "proposed by OpsTwin (system)")
        return True
    allowed = proposer.has_perm("policy.add_proposal") and (
        proposer.has_perm("twins.operate_twin") or proposer.has_perm("twins.operate_twin", twin)
    )
    result.step("rbac", allowed, f"{proposer.get_username()} may propose on {twin.slug}: {allowed}")
    return allowed


def decide(*, action: str, proposer, twin, confidence: float, p_breach: float) -> DecisionResult:
    """Decide what happens to a proposal. Pure apart from the permission lookup; never raises."""
    result = DecisionResult(decision=Decision.REJECT, risk_level=risk_of(action))
    if action in FORBIDDEN:
        result.step("forbidden", False, f"{action} is forbidden by policy")
        return result
    result.step("forbidden", True, f"{action} is allowed")
    if not _rbac(result, proposer, twin):
        return result
    auto_at, approval_at = settings.POLICY_AUTO_EXECUTE_AT, settings.POLICY_APPROVAL_AT
    if result.risk_level == RiskLevel.HIGH and p_breach > HIGH_RISK_MAX_BREACH:
        result.step("risk", False, f"HIGH risk needs P(breach) <= {HIGH_RISK_MAX_BREACH}, "
                                   f"simulated {p_breach:.3f}")
        result.decision = Decision.REQUIRE_ANALYSIS
        return result
    result.step("risk", True, f"risk {result.risk_level}")
    if confidence >= auto_at:
        result.decision = Decision.AUTO_EXECUTE
    elif confidence >= approval_at:
        result.decision = Decision.REQUIRE_APPROVAL
    else:
        result.decision = Decision.REQUIRE_ANALYSIS
    result.step("confidence", confidence >= approval_at,
                f"confidence {confidence:.3f} (auto >= {auto_at}, approval >= {approval_at})")
    if result.risk_level == RiskLevel.CRITICAL and result.decision == Decision.AUTO_EXECUTE:
        result.decision = Decision.REQUIRE_APPROVAL
        result.step("critical", True, "CRITICAL risk always needs human approval")
    return result
