"""The policy decision, check by check, in the documented order."""

from __future__ import annotations

import pytest

from policy.choices import Decision
from policy.confidence import combine
from policy.decision import decide
from policy.interlocks import InterlockResult
from policy.rules import PolicyRules
from policy.trust import ActivePolicy

pytestmark = pytest.mark.django_db
TRUSTED = ActivePolicy(True, "v1 verified (test)", PolicyRules(), version=1)
UNTRUSTED = ActivePolicy(False, "unsigned: automation denied", PolicyRules(), version=2)
OK = InterlockResult("temp", True, "Temperature 89 < 95: ok")
DENY = InterlockResult("temp", False, "Temperature 97 < 95: deny")


def run(twin, *, action="reduce_load", proposer=None, confidence=0.95, p_breach=0.0,
        policy=TRUSTED, interlocks=()):
    return decide(action=action, proposer=proposer, twin=twin, confidence=confidence,
                  p_breach=p_breach, policy=policy, interlocks=list(interlocks))


@pytest.mark.parametrize(("confidence", "expected"), [
    (0.95, Decision.AUTO_EXECUTE), (0.90, Decision.AUTO_EXECUTE),
    (0.89, Decision.REQUIRE_APPROVAL), (0.70, Decision.REQUIRE_APPROVAL),
    (0.69, Decision.REQUIRE_ANALYSIS),
])
def test_it_maps_confidence_to_the_seed_tiers(twin, confidence, expected):
    result = run(twin, confidence=confidence)
    assert result.decision == expected
    assert [s["check"] for s in result.trace] == [
        "policy", "rbac", "forbidden", "interlocks", "risk", "confidence"]


def test_a_trusted_policy_may_set_its_own_thresholds(twin):
    policy = ActivePolicy(True, "v1", PolicyRules(auto_execute_at=0.6, approval_at=0.4))
    assert run(twin, confidence=0.65, policy=policy).decision == Decision.AUTO_EXECUTE
    assert run(twin, confidence=0.45, policy=policy).decision == Decision.REQUIRE_APPROVAL


def test_an_untrusted_policy_never_executes_automatically(twin):
    for _ in range(2):  # every time, not just the first
        result = run(twin, confidence=0.99, policy=UNTRUSTED)
        assert result.decision == Decision.REQUIRE_APPROVAL
        assert result.trace[0] == {"check": "policy", "passed": False,
                                   "detail": "unsigned: automation denied", "version": 2,
                                   "trusted": False, "reason": "unsigned: automation denied",
                                   "key_id": ""}
        assert result.trace[-1]["check"] == "automation"


def test_rbac_comes_first_and_a_viewer_cannot_propose(twin, users):
    result = run(twin, proposer=users["viewer"], action="disable_interlock", interlocks=[DENY])
    assert result.decision == Decision.REJECT
    assert result.trace[1] == {"check": "rbac", "passed": False,
                               "detail": "viewer-user may propose on plant: False"}
    assert len(result.trace) == 2


def test_an_agent_may_propose(twin, users):
    assert run(twin, proposer=users["agent"], confidence=0.8).decision == \
        Decision.REQUIRE_APPROVAL


def test_it_rejects_a_forbidden_action_whatever_the_confidence(twin):
    result = run(twin, action="disable_interlock", confidence=1.0)
    assert result.decision == Decision.REJECT
    assert result.trace[2]["check"] == "forbidden" and result.trace[2]["passed"] is False


def test_a_failing_interlock_rejects_before_risk_and_confidence_are_read(twin):
    result = run(twin, confidence=0.99, interlocks=[OK, DENY])
    assert result.decision == Decision.REJECT
    assert result.trace[-1]["check"] == "interlocks"
    assert [r["passed"] for r in result.trace[-1]["results"]] == [True, False]


def test_critical_risk_always_waits_for_a_human_and_needs_two_approvers(twin):
    result = run(twin, action="emergency_stop", confidence=0.99)
    assert result.decision == Decision.REQUIRE_APPROVAL
    assert result.approvals_required == 2
    assert result.trace[-1]["check"] == "critical"


def test_an_unknown_action_is_treated_as_critical(twin):
    result = run(twin, action="made_up", confidence=0.99)
    assert result.risk_level == "CRITICAL"
    assert result.decision == Decision.REQUIRE_APPROVAL


@pytest.mark.parametrize(("p_breach", "expected"), [
    (0.05, Decision.AUTO_EXECUTE), (0.2, Decision.REQUIRE_ANALYSIS),
    (None, Decision.REQUIRE_ANALYSIS),
])
def test_high_risk_needs_a_passing_simulation(twin, p_breach, expected):
    policy = ActivePolicy(True, "v1", PolicyRules(risk={"reduce_load": "HIGH"}))
    assert run(twin, confidence=0.99, p_breach=p_breach, policy=policy).decision == expected


def test_confidence_is_the_weighted_sum_of_the_seed():
    components = {"historical_success": 1.0, "data_quality": 0.5,
                  "simulation_consistency": 0.2, "consensus": 0.0}
    assert combine(components) == pytest.approx(0.25 + 0.125 + 0.06)


def test_an_action_that_does_not_move_the_anomalys_metric_is_analysed_not_run(twin):
    """GIVEN an anomaly on a metric the what-if model says the action does not move, WHEN the
    policy decides, THEN a human must analyse it first, whatever the confidence; an action that
    moves the metric goes on to the risk and confidence checks."""
    blind = decide(action="reduce_load", proposer=None, twin=twin, confidence=0.99,
                   p_breach=0.0, policy=TRUSTED, interlocks=[],
                   moves=("Accelerometer1RMS", False))
    assert blind.decision == Decision.REQUIRE_ANALYSIS
    assert blind.trace[-1] == {
        "check": "effect", "passed": False,
        "detail": "reduce_load has no modelled effect on Accelerometer1RMS, the anomaly's "
                  "metric: it cannot be expected to clear the anomaly"}
    moved = decide(action="reduce_load", proposer=None, twin=twin, confidence=0.99,
                   p_breach=0.0, policy=TRUSTED, interlocks=[], moves=("Pressure", True))
    assert moved.decision == Decision.AUTO_EXECUTE
    assert [s["check"] for s in moved.trace] == [
        "policy", "rbac", "forbidden", "interlocks", "effect", "risk", "confidence"]
