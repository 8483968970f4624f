"""The catalogue of corrective actions and how OpsTwin picks one for an anomaly.

Each action has a risk level, a Beta prior on its success rate (the operators' declared
experience before OpsTwin has a track record of its own; ``historical_success`` updates it with
real outcomes) and, where one exists, the action that undoes it (used by rollback). Forbidden
actions are always rejected, whoever proposes them. A signed policy document may override
risk levels and rollbacks (``policy.rules``).
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.choices import RiskLevel


@dataclass(frozen=True)
class ActionSpec:
    """An action type: risk level, Beta(successes, failures) prior, what it does, its undo."""

    risk_level: str
    prior: tuple[float, float]
    description: str
    rollback: str = ""


CATALOGUE: dict[str, ActionSpec] = {
    "open_valve": ActionSpec(
        RiskLevel.LOW, (9.0, 1.0), "Open the loop valve toward its normal position.",
        rollback="restore_valve",
    ),
    "reduce_load": ActionSpec(
        RiskLevel.MEDIUM, (4.0, 1.0), "Lower the pump's load (flow setpoint) by a fraction.",
        rollback="restore_load",
    ),
    "hold": ActionSpec(RiskLevel.LOW, (1.0, 1.0), "Keep the current operating point."),
    "emergency_stop": ActionSpec(
        RiskLevel.CRITICAL, (1.0, 1.0), "Stop the pump motor at once (restart is manual)."
    ),
    "restore_load": ActionSpec(
        RiskLevel.MEDIUM, (4.0, 1.0), "Return the pump's load to its setpoint before a reduction."
    ),
    "restore_valve": ActionSpec(
        RiskLevel.LOW, (4.0, 1.0), "Return the loop valve to its position before it was opened."
    ),
}
FORBIDDEN: frozenset[str] = frozenset({"disable_interlock", "bypass_safety", "override_limits"})
FLOW_METRICS = frozenset({"Volume Flow RateRMS", "Pressure"})
VIBRATION_METRICS = frozenset({"Accelerometer1RMS", "Accelerometer2RMS"})


def risk_of(action: str) -> str:
    """Catalogue risk level of ``action``; unknown actions are CRITICAL (fail closed)."""
    spec = CATALOGUE.get(action)
    return spec.risk_level if spec else RiskLevel.CRITICAL


def candidate_action(metric: str, severity: str, value: float, baseline: float) -> tuple[str, dict]:
    """The corrective action OpsTwin proposes for an anomaly on ``metric``.

    A flow or pressure drop (value below its recent baseline) reads as a closing valve, so the
    valve is reopened; strong vibration at critical severity, or any other excursion, asks the
    pump for less load (20 % at critical severity, 10 % otherwise).
    """
    if metric in FLOW_METRICS and value < baseline:
        return "open_valve", {"fraction": 0.5}
    if metric in VIBRATION_METRICS and severity == "critical":
        return "reduce_load", {"fraction": 0.3}
    return "reduce_load", {"fraction": 0.2 if severity == "critical" else 0.1}
