"""The policy decision, check by check."""

from __future__ import annotations

import pytest

from policy.choices import Decision
from policy.confidence import combine
from policy.decision import decide

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("confidence", "expected"), [
    (0.95, Decision.AUTO_EXECUTE), (0.90, Decision.AUTO_EXECUTE),
    (0.89, Decision.REQUIRE_APPROVAL), (0.70, Decision.REQUIRE_APPROVAL),
    (0.69, Decision.REQUIRE_ANALYSIS),
])
def test_it_maps_confidence_to_the_seed_tiers(twin, confidence, expected):
    result = decide(action="reduce_load", proposer=None, twin=twin, confidence=confidence,
                    p_breach=0.0)
    assert result.decision == expected
    assert [s["check"] for s in result.trace] == ["forbidden", "rbac", "risk", "confidence"]


def test_it_rejects_a_forbidden_action_whatever_the_confidence(twin):
    result = decide(action="disable_interlock", proposer=None, twin=twin, confidence=1.0,
                    p_breach=0.0)
    assert result.decision == Decision.REJECT
    assert result.trace[0]["passed"] is False


def test_critical_risk_always_waits_for_a_human(twin):
    result = decide(action="emergency_stop", proposer=None, twin=twin, confidence=0.99,
                    p_breach=0.0)
    assert result.decision == Decision.REQUIRE_APPROVAL


def test_an_unknown_action_is_treated_as_critical(twin):
    result = decide(action="made_up", proposer=None, twin=twin, confidence=0.99, p_breach=0.0)
    assert result.risk_level == "CRITICAL"
    assert result.decision == Decision.REQUIRE_APPROVAL


def test_a_viewer_cannot_propose(twin, users):
    result = decide(action="reduce_load", proposer=users["viewer"], twin=twin, confidence=0.99,
                    p_breach=0.0)
    assert result.decision == Decision.REJECT
    assert result.trace[1] == {"check": "rbac", "passed": False,
                               "detail": "viewer-user may propose on plant: False"}


def test_an_agent_may_propose(twin, users):
    result = decide(action="reduce_load", proposer=users["agent"], twin=twin, confidence=0.8,
                    p_breach=0.0)
    assert result.decision == Decision.REQUIRE_APPROVAL


def test_confidence_is_the_weighted_sum_of_the_seed():
    components = {"historical_success": 1.0, "data_quality": 0.5,
                  "simulation_consistency": 0.2, "consensus": 0.0}
    assert combine(components) == pytest.approx(0.25 + 0.125 + 0.06)
