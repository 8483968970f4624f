"""Engine router and cost model: price Monte Carlo against quantum amplitude estimation, then
run the cheaper one.

Cost model (all times in seconds; constants below, measured on one core of the development
machine with ``python benchmarks/simulation.py``, which prints model vs measurement; re-measure
on the deployment host):

Monte Carlo, for a tail probability ``p`` to absolute error ``epsilon`` at confidence
``1 - alpha`` (normal approximation of the binomial, ``z = Phi^-1(1 - alpha/2)``)::

    N_mc = max(z^2 p (1 - p) / epsilon^2,  ln(1/alpha) / epsilon)
    t_mc = MC_OVERHEAD_S + N_mc * (d * MC_SECONDS_PER_DRAW + MC_SECONDS_PER_MODEL_EVAL)

The second term is the "rule of three" generalisation (Hanley & Lippman-Hand, JAMA 249,
1983): with zero hits, ``ln(1/alpha)/N`` is the one-sided upper bound, so p ~ 0 still needs
that many samples. ``d`` is the number of inputs.

Iterative QAE (Grinko, Gacon, Zoufal & Woerner, npj Quantum Inf. 7, 52, 2021): worst-case
oracle queries (their Theorem 1, Chernoff-Hoeffding version)::

    N_oracle < 50/epsilon * ln(2/alpha * log2(pi / (4 epsilon)))

The realised count with Clopper-Pearson intervals is ~10x smaller; measured with
qiskit-algorithms 0.4 over epsilon in [0.001, 0.05], the last Grover power is
``k_final ~ 0.2/epsilon``, ``sum_rounds (2k+1) ~ 2.5 k_final`` circuit-lengths of ``A`` and
``rounds ~ 1 + log2(0.2/epsilon)``, each round running ``shots`` shots. The circuit has
``q = 2n`` qubits (n state, objective, n-1 ancillas) and about ``G_A = 2^(n+1) + 20 n`` gates
after transpiling to (u, cx) (loader ~2^(n+1), comparator ~20 n).

* simulator (qiskit-aer statevector; sampling all shots from one state per circuit)::

      t_sim = rounds * SIM_OVERHEAD_PER_CIRCUIT_S
              + sum(2k+1) * G_A * 2^q * SIM_SECONDS_PER_GATE_AMPLITUDE

* hardware (hypothetical QPU, noise ignored: these depths are far beyond today's coherence
  times without error correction)::

      t_hw = shots * (rounds * HW_SECONDS_PER_SHOT + sum(2k+1) * G_A * HW_SECONDS_PER_LAYER)

Routing: ``engine="auto"`` picks ``quantum_iae`` only for a single-input tail request (see
:mod:`.request`) and only when its modelled cost on the request's ``cost_basis`` (default
``"simulator"``, which is what actually runs here) is lower than Monte Carlo's. On a classical
simulator the statevector costs ``2^q`` per gate, so this essentially never happens: the
quantum route exists for a real QPU and narrow tails with large MC sample needs (pricing with
``cost_basis="hardware"`` shows where the crossover would be). Explicit engines are honoured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri

from .distributions import make_distribution
from .errors import SimulationError
from .montecarlo import DEFAULT_MAX_SAMPLES, DEFAULT_N_SAMPLES, run_monte_carlo
from .quantum import DEFAULT_SHOTS, estimate_tail_probability
from .request import ParsedRequest, parse_request

__all__ = [
    "EngineChoice",
    "choose_engine",
    "iae_cost",
    "mc_cost",
    "mc_samples_needed",
    "mc_seconds",
    "simulate",
]

MC_OVERHEAD_S = 5e-4
MC_SECONDS_PER_DRAW = 6e-8  # per sample per input, incl. summarising an output of that size
MC_SECONDS_PER_MODEL_EVAL = 1e-8
SIM_OVERHEAD_PER_CIRCUIT_S = 0.015
SIM_SECONDS_PER_GATE_AMPLITUDE = 1.1e-9
HW_SECONDS_PER_LAYER = 1e-6
HW_SECONDS_PER_SHOT = 2.5e-4


@dataclass(frozen=True)
class EngineChoice:
    """The routing decision: ``engine`` to run, a human-readable ``reason`` and the
    ``cost`` breakdown (JSON-serialisable) behind it."""

    engine: str
    reason: str
    cost: dict[str, Any] = field(default_factory=dict)


def _z(alpha: float) -> float:
    return float(ndtri(1.0 - alpha / 2.0))


def mc_samples_needed(p: float, epsilon: float, alpha: float) -> int:
    """Samples for absolute error ``epsilon`` on probability ``p`` at confidence 1-alpha:
    ``max(z^2 p(1-p)/epsilon^2, ln(1/alpha)/epsilon)`` (module docstring)."""
    normal = _z(alpha) ** 2 * p * (1.0 - p) / epsilon**2
    return int(math.ceil(max(normal, math.log(1.0 / alpha) / epsilon, 1.0)))


def mc_seconds(n_samples: int, n_inputs: int) -> float:
    """Modelled wall time of a Monte Carlo run of ``n_samples`` over ``n_inputs`` inputs."""
    per_sample = n_inputs * MC_SECONDS_PER_DRAW + MC_SECONDS_PER_MODEL_EVAL
    return MC_OVERHEAD_S + n_samples * per_sample


def mc_cost(p: float, epsilon: float, alpha: float, n_inputs: int) -> dict[str, Any]:
    """Modelled Monte Carlo cost: ``{"samples", "seconds"}``."""
    n = mc_samples_needed(p, epsilon, alpha)
    return {"samples": n, "seconds": mc_seconds(n, n_inputs)}


def iae_cost(epsilon: float, alpha: float, num_qubits: int, shots: int) -> dict[str, Any]:
    """Modelled IAE cost (queries, circuit size, simulator and hardware seconds)."""
    k_final = 0.2 / epsilon
    grover_lengths = 2.5 * k_final + 1.0  # sum over rounds of (2k + 1)
    rounds = 1 + max(math.ceil(math.log2(max(0.2 / epsilon, 1.0))), 1)
    qubits = max(2 * num_qubits, num_qubits + 1)
    gates = 2 ** (num_qubits + 1) + 20 * num_qubits
    bound = 50.0 / epsilon * math.log(2.0 / alpha * math.log2(max(math.pi / (4 * epsilon), 2.0)))
    sim = rounds * SIM_OVERHEAD_PER_CIRCUIT_S
    sim += grover_lengths * gates * 2.0**qubits * SIM_SECONDS_PER_GATE_AMPLITUDE
    per_shot = rounds * HW_SECONDS_PER_SHOT + grover_lengths * gates * HW_SECONDS_PER_LAYER
    hardware = shots * per_shot
    return {
        "num_qubits": num_qubits,
        "total_qubits": qubits,
        "gates_A": gates,
        "rounds": rounds,
        "oracle_queries_expected": int(shots * 1.25 * k_final),
        "oracle_queries_bound": int(math.ceil(bound)),
        "simulator_seconds": sim,
        "hardware_seconds": hardware,
    }


def _p_plan(parsed: ParsedRequest) -> tuple[float, str]:
    if parsed.p_hint is not None:
        return float(parsed.p_hint), "p_hint"
    if parsed.tail is not None:
        dist = make_distribution(parsed.tail.spec, parsed.tail.metric)
        cdf = float(dist.cdf(np.array([parsed.tail.limit]))[0])
        return (1.0 - cdf if parsed.tail.op == ">" else cdf), "input cdf"
    return 0.5, "worst case p(1-p) = 1/4"


def _decide(parsed: ParsedRequest, mc: dict[str, Any], q: dict[str, Any] | None) -> EngineChoice:
    basis = parsed.cost_basis
    if parsed.engine == "quantum_iae" and q is None:
        raise SimulationError(
            "engine 'quantum_iae' only serves a tail-probability request: no 'outputs', "
            "no 'pump', exactly one constraint on one of the inputs"
        )
    if parsed.engine != "auto":
        return EngineChoice(parsed.engine, f"engine '{parsed.engine}' requested explicitly")
    if q is None:
        return EngineChoice("monte_carlo", "auto: not a single-input tail request")
    q_seconds = q[f"{basis}_seconds"]
    ratio = q_seconds / mc["seconds"]
    text = (
        f"auto: Monte Carlo needs ~{mc['samples']:,} samples (~{mc['seconds']:.3g} s) for "
        f"+-{parsed.epsilon:g} at {1 - parsed.alpha:.0%}; IAE on the {basis} is modelled at "
        f"~{q_seconds:.3g} s ({ratio:.3g}x)"
    )
    engine = "quantum_iae" if q_seconds < mc["seconds"] else "monte_carlo"
    return EngineChoice(engine, f"{text} -> {engine}")


def _mc_plan(parsed: ParsedRequest, mc: dict[str, Any]) -> dict[str, int]:
    """First batch and cap of a Monte Carlo run; a tail request is sized for the accuracy the
    router priced (``mc["samples"]``), within ``max_samples``."""
    n = parsed.mc.get("n_samples", DEFAULT_N_SAMPLES)
    cap = parsed.mc.get("max_samples", DEFAULT_MAX_SAMPLES)
    if parsed.tail is not None:
        n = min(max(n, mc["samples"]), cap)
    return {"n_samples": n, "max_samples": cap}


def _choose(parsed: ParsedRequest) -> EngineChoice:
    p, source = _p_plan(parsed)
    mc = mc_cost(p, parsed.epsilon, parsed.alpha, len(parsed.inputs))
    quantum_ok = parsed.tail is not None
    shots = DEFAULT_SHOTS if parsed.shots is None else parsed.shots
    q = iae_cost(parsed.epsilon, parsed.alpha, parsed.num_qubits, shots) if quantum_ok else None
    choice = _decide(parsed, mc, q)
    cost = {
        "epsilon": parsed.epsilon,
        "alpha": parsed.alpha,
        "p_plan": p,
        "p_source": source,
        "cost_basis": parsed.cost_basis,
        "monte_carlo": mc,
        "quantum_iae": q,
        "mc_plan": _mc_plan(parsed, mc),
    }
    return EngineChoice(choice.engine, choice.reason, cost)


def choose_engine(request: dict[str, Any]) -> EngineChoice:
    """Decide which engine serves ``request`` (shape: :mod:`.request`) without running it.

    Returns:
        :class:`EngineChoice` with the cost breakdown of both engines and ``cost["mc_plan"]``
        (``{"n_samples": first batch, "max_samples": cap}`` a Monte Carlo run would use).

    Raises:
        SimulationError: invalid request, unknown engine, or ``quantum_iae`` requested for a
            request it cannot serve.
    """
    return _choose(parse_request(request))


def _run_quantum(parsed: ParsedRequest, progress: Any, cancelled: Any) -> dict[str, Any]:
    tail = parsed.tail
    if tail is None:  # pragma: no cover - _decide never routes a non-tail request here
        raise SimulationError("quantum_iae needs a tail-probability request")
    result = estimate_tail_probability(
        tail.spec,
        tail.limit,
        op=tail.op,
        num_qubits=parsed.num_qubits,
        epsilon=parsed.epsilon,
        alpha=parsed.alpha,
        seed=parsed.mc.get("seed", 0),
        shots=parsed.shots,
        progress=progress,
        cancelled=cancelled,
    ).to_dict()
    low, high = result["confidence_interval"]
    result["constraints"] = [
        {
            "metric": tail.metric,
            "op": tail.op,
            "limit": tail.limit,
            "p_breach": result["estimate"],
            "stderr": (high - low) / (2.0 * _z(parsed.alpha)),
            "ci": [low, high],
            "label": f"{tail.metric} {tail.op} {tail.limit:g}",
        }
    ]
    return result


def _run_mc(
    parsed: ParsedRequest, choice: EngineChoice, progress: Any, cancelled: Any
) -> dict[str, Any]:
    kwargs = dict(parsed.mc) | choice.cost["mc_plan"]
    result = run_monte_carlo(
        parsed.model,
        parsed.inputs,
        constraints=parsed.constraints,
        correlation=parsed.correlation,
        progress=progress,
        cancelled=cancelled,
        **kwargs,
    )
    return result.to_dict()


def simulate(
    request: dict[str, Any],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Validate ``request`` (shape documented in :mod:`.request`), route it and run it.

    Returns:
        The engine's result dict (``MonteCarloResult.to_dict()`` or
        ``QuantumResult.to_dict()`` plus a ``constraints`` list) with ``engine_used``,
        ``engine_reason`` and ``cost`` added. JSON-serialisable.

    Raises:
        SimulationError: invalid request (see :func:`.request.parse_request`), unknown engine,
            quantum requested for a non-tail request, or model errors.
        SimulationCancelled: ``cancelled()`` returned True.
    """
    parsed = parse_request(request)
    choice = _choose(parsed)
    if choice.engine == "quantum_iae":
        result = _run_quantum(parsed, progress, cancelled)
    else:
        result = _run_mc(parsed, choice, progress, cancelled)
    result.update(engine_used=choice.engine, engine_reason=choice.reason, cost=choice.cost)
    return result
