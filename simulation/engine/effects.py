"""Declared effects of actions on metrics, for assets without a physical model.

An action's *declared effect* is data: a list of metric effects, each naming the metrics it
moves (``"*"``: every metric of the asset), how (``mode``), by how much (``amount``: a number,
or ``{"parameter": name}`` for one of the action's parameters, e.g. ``fraction``) and how
uncertain the outcome is (``gain``: a distribution spec of :mod:`.distributions`, the share of
the declared amount actually realised). With ``x`` a metric's value under ``hold``, ``a`` the
amount, ``g`` a draw of the gain and ``c`` the metric's normal centre (the fit's mean):

* ``scale``: ``x' = x (1 + direction a g)`` (``direction`` -1 or +1). Meant for ratio-scale
  metrics (flow, current, power, load, utilisation, request rate) that a load change moves in
  proportion; on an interval-scale metric (°C) it is only indicative.
* ``toward_normal``: ``x' = x + a g (c - x)``: the action closes the share ``a g`` of the gap
  between the metric and its normal centre.
* ``shift``: ``x' = x + direction a g`` in the metric's own unit (for effects declared on a
  named metric, e.g. ``{"metrics": ["Temperature"], "mode": "shift", "amount": 2.0}``).

``EFFECTS`` is the table keyed by action name that the generic what-if uses when its caller
passes no effect: the policy app's action catalogue may read it (to show what an action is
assumed to do) or pass an action's own declared effect to ``run_what_if(effect=...)``. The
figures are conservative declarations, not measurements: a gain of ``uniform(0, 1)`` says
"somewhere between no effect and the full declared effect"; replace them per plant once
outcomes are known (the proposal's verification compares the simulated band with what
happened).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SimulationError
from .pump_fit import finite_float

__all__ = ["EFFECTS", "MODES", "MetricEffect", "resolve_effect"]

MODES = ("scale", "toward_normal", "shift")
FRACTION = {"parameter": "fraction"}


def _uniform(low: float, high: float) -> dict[str, Any]:
    return {"dist": "uniform", "params": {"low": low, "high": high}}


EFFECTS: dict[str, dict[str, Any]] = {
    "hold": {"description": "No change: every metric follows its recent distribution.",
             "effects": []},
    "reduce_load": {
        "description": "Load-driven metrics fall by up to the shed fraction (a metric the load "
                       "does not drive does not move: gain 0).",
        "effects": [{"metrics": "*", "mode": "scale", "direction": -1, "amount": FRACTION,
                     "gain": _uniform(0.0, 1.0)}]},
    "open_valve": {
        "description": "Every metric closes between half and all of the declared share of its "
                       "gap to the normal centre.",
        "effects": [{"metrics": "*", "mode": "toward_normal", "amount": FRACTION,
                     "gain": _uniform(0.5, 1.0)}]},
    "emergency_stop": {
        "description": "A stopped asset: load-driven metrics fall to 0-10 % of their value "
                       "(static, no inertia: indicative).",
        "effects": [{"metrics": "*", "mode": "scale", "direction": -1, "amount": 1.0,
                     "gain": _uniform(0.9, 1.0)}]},
    "restore_load": {"description": "Undoes a reduction: the metrics return to the course they "
                                    "had before it, i.e. their recent distribution.",
                     "effects": []},
    "restore_valve": {"description": "Undoes an opening: the metrics return to the course they "
                                     "had before it, i.e. their recent distribution.",
                      "effects": []},
}


@dataclass(frozen=True)
class MetricEffect:
    """One resolved metric effect: ``metrics`` (names, or ``("*",)``), ``mode`` (one of
    ``MODES``), ``amount`` (a float, parameters substituted), ``direction`` (+1 or -1) and
    ``gain`` (a distribution spec; None: the declared amount exactly)."""

    metrics: tuple[str, ...]
    mode: str
    amount: float
    direction: float
    gain: dict[str, Any] | None

    def applies_to(self, metric: str) -> bool:
        """Whether this effect moves ``metric``."""
        return "*" in self.metrics or metric in self.metrics


def _amount(raw: Any, parameters: Mapping[str, Any], label: str) -> float:
    if isinstance(raw, Mapping):
        name = raw.get("parameter")
        if name not in parameters:
            raise SimulationError(f"{label} needs the parameter '{name}'")
        value = finite_float(parameters[name], f"parameter '{name}'")
        if not 0.0 < value <= 1.0:
            raise SimulationError(f"parameter '{name}' must be in (0, 1], got {value}")
        return value
    return finite_float(raw, f"{label}.amount")


def _metric_effect(item: Any, parameters: Mapping[str, Any], label: str) -> MetricEffect:
    if not isinstance(item, Mapping) or item.get("mode") not in MODES:
        raise SimulationError(f"{label}: an effect needs a mode, one of {list(MODES)}")
    names = item.get("metrics", "*")
    names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
    direction = finite_float(item.get("direction", 1), f"{label}.direction")
    if direction not in (-1.0, 1.0):
        raise SimulationError(f"{label}.direction must be -1 or 1, got {direction}")
    gain = item.get("gain")
    if gain is not None and (not isinstance(gain, Mapping) or "dist" not in gain):
        raise SimulationError(f"{label}.gain must be a distribution spec")
    return MetricEffect(names, str(item["mode"]), _amount(item.get("amount", 1.0), parameters,
                                                          label), direction,
                        dict(gain) if gain else None)


def resolve_effect(action: str, parameters: Mapping[str, Any] | None,
                   effect: Mapping[str, Any] | None = None) -> list[MetricEffect]:
    """The metric effects of ``action`` with its ``parameters`` substituted.

    Args:
        action: the action's name. parameters: its parameters (``{"fraction": 0.2}``).
        effect: the declared effect (``{"effects": [...]}``, shape of an ``EFFECTS`` value);
            ``EFFECTS[action]`` when None.

    Raises:
        SimulationError: no declared effect for ``action``, a malformed effect, a missing
            parameter or one outside (0, 1], or parameters the effect does not use.
    """
    declared = effect if effect is not None else EFFECTS.get(action)
    if not isinstance(declared, Mapping) or not isinstance(declared.get("effects"), list):
        raise SimulationError(f"action '{action}' has no declared effect on metrics; "
                              f"declared: {sorted(EFFECTS)}")
    parameters = dict(parameters or {})
    used = {i["amount"]["parameter"] for i in declared["effects"]
            if isinstance(i, Mapping) and isinstance(i.get("amount"), Mapping)}
    extra = sorted(set(parameters) - used)
    if extra:
        raise SimulationError(f"action '{action}' takes no parameter(s) {extra}")
    return [_metric_effect(item, parameters, f"{action}.effects[{k}]")
            for k, item in enumerate(declared["effects"])]
