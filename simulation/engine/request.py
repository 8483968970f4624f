"""Validation of the JSON simulation request accepted by :func:`.engine_router.simulate`.

Request shape (every key optional unless stated; unknown keys are rejected)::

    {
      # (a) generic request: named input distributions ...
      "inputs": {"x": {"dist": "normal", "params": {"mean": 1, "std": 0.2}}, ...},
      # ... and optional outputs as linear combinations of inputs (no code is evaluated);
      # without "outputs" every input is reported as an output metric.
      "outputs": {"y": {"terms": {"x": 2.0, "z": -1.0}, "intercept": 0.5}},
      "correlation": {"names": ["x", "z"], "matrix": [[1, 0.6], [0.6, 1]]},

      # (c) OR a pump what-if instead of inputs/outputs/correlation:
      "pump": {"model": <PumpModel.to_state()>, "action": "reduce_load",
               "params": {"fraction": 0.2}, "state": <calibrate_state(window)>},

      "constraints": [{"metric": "y", "op": ">", "limit": 3.0}],
      "engine": "auto" | "monte_carlo" | "quantum_iae",          # default "auto"
      # Monte Carlo settings (defaults as run_monte_carlo):
      "n_samples": 10000, "max_samples": 160000, "rse_target": 0.01, "seed": 0,
      "method": "random" | "sobol" | "antithetic", "bins": 40,
      # tail-probability accuracy and quantum settings:
      "epsilon": 0.01, "alpha": 0.05, "num_qubits": 5, "shots": null,
      "p_hint": null,                       # planning guess of the tail probability
      "cost_basis": "simulator" | "hardware" # what the router prices the quantum path on
    }

(b) A *tail-probability request* is a generic request without ``outputs`` whose single
constraint is on one of the inputs, e.g. ``{"inputs": {"x": spec}, "constraints":
[{"metric": "x", "op": ">", "limit": 2}]}``; only such requests can run on ``quantum_iae``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SimulationError
from .montecarlo import Model, validate_constraints
from .pump_model import PumpModel
from .quantum import MAX_QUBITS
from .sampling import SamplingPlan

__all__ = ["ENGINES", "ParsedRequest", "TailQuery", "parse_request"]

ENGINES: tuple[str, ...] = ("auto", "monte_carlo", "quantum_iae")
COST_BASES: tuple[str, ...] = ("simulator", "hardware")
_MC_KEYS = ("n_samples", "max_samples", "rse_target", "seed", "method", "bins")
_Q_KEYS = ("epsilon", "alpha", "num_qubits", "shots")
_ALLOWED = frozenset(
    {"inputs", "outputs", "correlation", "pump", "constraints", "engine", "p_hint", "cost_basis"}
    | set(_MC_KEYS)
    | set(_Q_KEYS)
)


@dataclass(frozen=True)
class TailQuery:
    """A single-input tail probability ``P(input op limit)`` (quantum-eligible)."""

    metric: str
    spec: dict[str, Any]
    op: str
    limit: float


@dataclass
class ParsedRequest:
    """A validated request: model + inputs for Monte Carlo, plus routing information."""

    kind: str
    model: Model
    inputs: dict[str, dict[str, Any]]
    constraints: list[dict[str, Any]]
    engine: str
    mc: dict[str, Any]
    epsilon: float
    alpha: float
    num_qubits: int
    shots: int | None
    cost_basis: str
    p_hint: float | None
    tail: TailQuery | None = None
    correlation: Mapping[str, Any] | None = field(default=None)


def _linear_model(outputs: Any, names: list[str]) -> Model:
    if not isinstance(outputs, Mapping) or not outputs:
        raise SimulationError("outputs must be a non-empty dict of name -> {terms, intercept}")
    parsed: dict[str, tuple[float, dict[str, float]]] = {}
    for out, spec in outputs.items():
        if not isinstance(spec, Mapping) or not set(spec) <= {"terms", "intercept"}:
            raise SimulationError(f"output '{out}': expected {{'terms': {{...}}, 'intercept'}}")
        terms = spec.get("terms", {})
        if not isinstance(terms, Mapping):
            raise SimulationError(f"output '{out}': 'terms' must be a dict of input -> coefficient")
        unknown = [t for t in terms if t not in names]
        if unknown:
            raise SimulationError(f"output '{out}': unknown input(s) {unknown}; inputs are {names}")
        coefs = {
            str(t): _number(c, f"output '{out}' coefficient of '{t}'") for t, c in terms.items()
        }
        intercept = _number(spec.get("intercept", 0.0), f"output '{out}' intercept")
        parsed[str(out)] = (intercept, coefs)

    def model(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(samples.values())))
        result = {}
        for out, (intercept, coefs) in parsed.items():
            value = np.full(n, intercept)
            for name, coef in coefs.items():
                value += coef * samples[name]
            result[out] = value
        return result

    return model


def _number(value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SimulationError(f"{label} must be a finite number, got {value!r}")
    return float(value)


def _pump(request: Mapping[str, Any]) -> tuple[Model, dict[str, dict[str, Any]]]:
    clash = sorted({"inputs", "outputs", "correlation"} & set(request))
    if clash:
        raise SimulationError(f"'pump' requests cannot also have {clash}")
    pump = request["pump"]
    if not isinstance(pump, Mapping) or not {"model", "action", "state"} <= set(pump):
        raise SimulationError("pump must be a dict with 'model', 'action', 'state' (+ 'params')")
    extra = sorted(set(pump) - {"model", "action", "params", "state"})
    if extra:
        raise SimulationError(f"pump: unexpected keys {extra}")
    model = PumpModel.from_state(pump["model"])
    params = pump.get("params") or {}
    if not isinstance(params, Mapping):
        raise SimulationError("pump.params must be a dict")
    return model.what_if(str(pump["action"]), params, pump["state"])


def _tail(inputs: Mapping[str, Any], outputs: Any, constraints: list[dict]) -> TailQuery | None:
    if outputs is not None or len(constraints) != 1:
        return None
    c = constraints[0]
    if c["metric"] not in inputs:
        return None
    return TailQuery(c["metric"], dict(inputs[c["metric"]]), c["op"], c["limit"])


def _settings(request: Mapping[str, Any]) -> dict[str, Any]:
    engine = request.get("engine", "auto")
    if engine not in ENGINES:
        raise SimulationError(f"unknown engine {engine!r}; use one of {list(ENGINES)}")
    basis = request.get("cost_basis", "simulator")
    if basis not in COST_BASES:
        raise SimulationError(f"unknown cost_basis {basis!r}; use one of {list(COST_BASES)}")
    p_hint = request.get("p_hint")
    if p_hint is not None and not 0.0 <= _number(p_hint, "p_hint") <= 1.0:
        raise SimulationError("p_hint must lie in [0, 1]")
    epsilon = _number(request.get("epsilon", 0.01), "epsilon")
    alpha = _number(request.get("alpha", 0.05), "alpha")
    if not 0 < epsilon <= 0.5 or not 0 < alpha < 1:
        raise SimulationError("need 0 < epsilon <= 0.5 and 0 < alpha < 1")
    num_qubits = request.get("num_qubits", 5)
    if isinstance(num_qubits, bool) or not isinstance(num_qubits, int):
        raise SimulationError(f"num_qubits must be an integer, got {num_qubits!r}")
    if not 1 <= num_qubits <= MAX_QUBITS:
        raise SimulationError(f"num_qubits must be in 1..{MAX_QUBITS}, got {num_qubits}")
    shots = request.get("shots")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise SimulationError(f"shots must be a positive integer or null, got {shots!r}")
    return {
        "engine": engine,
        "cost_basis": basis,
        "p_hint": p_hint,
        "epsilon": epsilon,
        "alpha": alpha,
        "num_qubits": num_qubits,
        "shots": shots,
        "mc": {k: request[k] for k in _MC_KEYS if k in request},
    }


def parse_request(request: Any) -> ParsedRequest:
    """Validate a request dict (shape in the module docstring).

    Raises:
        SimulationError: not a dict, unknown keys, neither/both of inputs and pump, bad specs,
            outputs referencing unknown inputs, bad constraints/engine/settings, bad pump part.
    """
    if not isinstance(request, Mapping):
        raise SimulationError("request must be a JSON object")
    unknown = sorted(set(request) - _ALLOWED)
    if unknown:
        raise SimulationError(f"unknown request keys {unknown}; allowed: {sorted(_ALLOWED)}")
    if ("pump" in request) == ("inputs" in request):
        raise SimulationError("request needs exactly one of 'inputs' or 'pump'")
    constraints = validate_constraints(request.get("constraints"))
    settings = _settings(request)
    tail = None
    if "pump" in request:
        kind, (model, inputs) = "pump", _pump(request)
    else:
        inputs = request["inputs"]
        plan = SamplingPlan.build(inputs, request.get("correlation"), "random")
        outputs = request.get("outputs")
        model = _linear_model(outputs, plan.names) if outputs is not None else dict
        produced = list(outputs) if outputs is not None else plan.names
        for c in constraints:
            if c["metric"] not in produced:
                raise SimulationError(
                    f"constraint on unknown metric '{c['metric']}'; the model produces {produced}"
                )
        kind, tail = "generic", _tail(inputs, outputs, constraints)
        inputs = {k: dict(v) for k, v in inputs.items()}
    return ParsedRequest(
        kind=kind,
        model=model,
        inputs=inputs,
        constraints=constraints,
        tail=tail,
        correlation=request.get("correlation"),
        **settings,
    )
