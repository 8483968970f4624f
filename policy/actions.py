"""The catalogue of corrective actions and how OpsTwin picks one for an anomaly.

The single source of what may be proposed: each action lists the asset kinds it applies to, a
JSON Schema (draft 2020-12) of its parameters with units and bounds, a risk level, a Beta prior
on its success rate (the operators' declared experience before OpsTwin has a track record of
its own; ``historical_success`` updates it with real outcomes) and, where one exists, the action
that undoes it (used by rollback). Rollback-only actions (``proposable=False``) are sent by a
rollback with the original proposal's parameters and cannot be proposed on their own. Forbidden
actions are always rejected, whoever proposes them. A signed policy document may override risk
levels and rollbacks (``policy.rules``); ``policy.catalogue`` serves the catalogue as resolved
for a twin, with the interlocks of its active policy.

Parameter semantics and bounds come from the what-if model (``simulation.engine.pump_model``):
``reduce_load``: ``F' = (1-f) F``; ``open_valve``: ``F' = F + f (F_normal - F)``, 0 < f <= 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.choices import RiskLevel
from telemetry.choices import Severity
from twins.choices import AssetKind

NO_PARAMETERS: dict = {"type": "object", "additionalProperties": False, "properties": {}}


def fraction_parameters(meaning: str) -> dict:
    """Parameters ``{"fraction": f}`` with 0 < f <= 1 (dimensionless, UCUM unit ``1``)."""
    return {
        "type": "object", "additionalProperties": False, "required": ["fraction"],
        "properties": {"fraction": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 1, "unit": "1",
            "description": f"{meaning}; a dimensionless share, 0 < fraction <= 1.",
            "examples": [0.1, 0.5]}},
    }


@dataclass(frozen=True)
class ActionSpec:
    """An action type: risk level, Beta(successes, failures) prior, what it does, its undo,
    the asset kinds it applies to and the JSON Schema of its parameters."""

    risk_level: str
    prior: tuple[float, float]
    description: str
    rollback: str = ""
    kinds: frozenset[str] = frozenset(AssetKind.values)
    parameters: dict = field(default_factory=lambda: NO_PARAMETERS)
    proposable: bool = True


PUMP, VALVE, MOTOR, GENERIC = AssetKind.PUMP, AssetKind.VALVE, AssetKind.MOTOR, AssetKind.GENERIC
# Load actions apply to anything with a load (a generic asset: the data-driven what-if's declared
# effect, ``simulation.engine.effects``); valve actions to what has the loop valve.
LOADED = frozenset({PUMP, MOTOR, GENERIC})
CATALOGUE: dict[str, ActionSpec] = {
    "open_valve": ActionSpec(
        RiskLevel.LOW, (9.0, 1.0), "Open the loop valve toward its normal position.",
        rollback="restore_valve", kinds=frozenset({PUMP, VALVE}),
        parameters=fraction_parameters("Share of the gap between the current flow and the "
                                       "normal flow to close (1: back to normal flow)"),
    ),
    "reduce_load": ActionSpec(
        RiskLevel.MEDIUM, (4.0, 1.0), "Lower the pump's load (flow setpoint) by a fraction.",
        rollback="restore_load", kinds=LOADED,
        parameters=fraction_parameters("Share of the current load (flow and motor current) "
                                       "to shed (0.2: 20 % less)"),
    ),
    "hold": ActionSpec(RiskLevel.LOW, (1.0, 1.0), "Keep the current operating point."),
    "emergency_stop": ActionSpec(
        RiskLevel.CRITICAL, (1.0, 1.0), "Stop the pump motor at once (restart is manual).",
        kinds=LOADED,
    ),
    "restore_load": ActionSpec(
        RiskLevel.MEDIUM, (4.0, 1.0), "Return the pump's load to its setpoint before a reduction.",
        kinds=LOADED, proposable=False,
        parameters={"type": "object", "description": "The reduction's own parameters."},
    ),
    "restore_valve": ActionSpec(
        RiskLevel.LOW, (4.0, 1.0), "Return the loop valve to its position before it was opened.",
        kinds=frozenset({PUMP, VALVE}), proposable=False,
        parameters={"type": "object", "description": "The opening's own parameters."},
    ),
}
FORBIDDEN: frozenset[str] = frozenset({"disable_interlock", "bypass_safety", "override_limits"})
FLOW_METRICS = frozenset({"Volume Flow RateRMS", "Pressure"})
VIBRATION_METRICS = frozenset({"Accelerometer1RMS", "Accelerometer2RMS"})


def risk_of(action: str) -> str:
    """Catalogue risk level of ``action``; unknown actions are CRITICAL (fail closed)."""
    spec = CATALOGUE.get(action)
    return spec.risk_level if spec else RiskLevel.CRITICAL


def candidate_action(metric: str, severity: str, value: float, baseline: float,
                     kind: str = AssetKind.PUMP) -> tuple[str, dict]:
    """The corrective action OpsTwin proposes for an anomaly on ``metric`` of a ``kind`` asset.

    A flow or pressure drop (value below its recent baseline) reads as a closing valve, so the
    valve is reopened; strong vibration at critical severity, or any other excursion, asks the
    pump for less load (20 % at critical severity, 10 % otherwise). Always an action of the
    kind's catalogue: a valve is reopened (it has no load), and an asset without the loop valve
    gets the load reduction.
    """
    reopens = (metric in FLOW_METRICS and value < baseline) or kind == VALVE
    if reopens and kind in CATALOGUE["open_valve"].kinds:
        return "open_valve", {"fraction": 0.5}
    if metric in VIBRATION_METRICS and severity == Severity.CRITICAL:
        return "reduce_load", {"fraction": 0.3}
    return "reduce_load", {"fraction": 0.2 if severity == Severity.CRITICAL else 0.1}
