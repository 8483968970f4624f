"""Tail probabilities by Iterative Quantum Amplitude Estimation on the qiskit-aer simulator.

Method: Grinko, Gacon, Zoufal & Woerner, "Iterative quantum amplitude estimation",
npj Quantum Information 7, 52 (2021), as implemented by
``qiskit_algorithms.IterativeAmplitudeEstimation`` (Clopper-Pearson intervals), run on
``qiskit_aer.primitives.SamplerV2``.

Circuit ``A`` on ``2n`` qubits (``n = num_qubits``):

1. load the distribution, discretised on ``2^n`` equally spaced points between its 0.1 % and
   99.9 % quantiles (or its support bounds when finite), into qubits ``0..n-1`` with
   amplitudes ``sqrt(p_i)``. The loader is the Grover-Rudolph construction (Grover &
   Rudolph, arXiv:quant-ph/0208112, 2002): one uniformly controlled RY per level of the
   binary tree (Mottonen et al., arXiv:quant-ph/0407010). qiskit's ``StatePreparation`` is
   not used because its isometry synthesis fails at 8 qubits in qiskit 2.6 ("Input matrix is
   not unitary") for these smooth real amplitude vectors.
2. mark the tail with ``IntegerComparatorGate`` onto the objective qubit ``n`` (``i >= t``
   for ``">"``, ``i < t`` for ``"<"``), synthesised with ``n - 1`` clean ancillas
   (qubits ``n+1..2n-1``), which keeps the depth linear in ``n`` (the ancilla-free synthesis
   has ~85k gates at n = 8 and made one IAE run take ~100 s instead of ~3 s).

The Grover operator is ``Q = A S_0 A^dagger S_chi`` with ``S_chi`` a Z on the objective qubit
and ``S_0`` the reflection about |0> on the ``n + 1`` non-ancilla qubits.

The probability of measuring 1 on the objective qubit is the discretised tail probability
``sum_{i marked} p_i``; IAE estimates it to ``+-epsilon`` with confidence ``1 - alpha``.
``exact_probability`` (computed classically) is what IAE estimates; ``discretisation_error``
is its distance from the continuous ``P(X op limit)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .distributions import Distribution, make_distribution
from .errors import SimulationCancelled, SimulationError

if TYPE_CHECKING:  # qiskit takes seconds to import: only the functions that build circuits do
    from qiskit import QuantumCircuit
    from qiskit_algorithms import EstimationProblem

__all__ = [
    "DEFAULT_SHOTS",
    "MAX_QUBITS",
    "Discretisation",
    "QuantumResult",
    "build_tail_problem",
    "discretise",
    "distribution_loader",
    "estimate_tail_probability",
    "iae_max_rounds",
]

DEFAULT_SHOTS = 100
MAX_QUBITS = 10
TAIL_QUANTILE = 1e-3
_BASIS = ["u", "cx"]


@dataclass(frozen=True)
class Discretisation:
    """A distribution discretised on ``2^n`` grid points, and the tail to estimate.

    Attributes:
        grid: (2^n,) grid points, increasing. probabilities: (2^n,) masses summing to 1
            (mass of the cell around each point, truncated and renormalised).
        threshold: comparator value t; marked states are ``i >= t`` (op ``">"``) or
            ``i < t`` (op ``"<"``). exact: discretised tail probability.
        continuous: the continuous ``P(X op limit)`` from the cdf.
    """

    grid: np.ndarray
    probabilities: np.ndarray
    threshold: int
    op: str
    exact: float
    continuous: float


def _truncation(dist: Distribution) -> tuple[float, float]:
    lo, hi = dist.support
    if not math.isfinite(lo):
        lo = float(dist.ppf(np.array([TAIL_QUANTILE]))[0])
    if not math.isfinite(hi):
        hi = float(dist.ppf(np.array([1.0 - TAIL_QUANTILE]))[0])
    if not hi > lo:
        raise SimulationError("cannot discretise a degenerate (zero-width) distribution")
    return lo, hi


def discretise(dist: Distribution, num_qubits: int, limit: float, op: str) -> Discretisation:
    """Discretise ``dist`` on ``2**num_qubits`` points and locate the tail ``X op limit``.

    Cell masses are cdf differences between grid midpoints (outer edges at the truncation
    points), renormalised to 1. Raises SimulationError for a degenerate distribution.
    """
    lo, hi = _truncation(dist)
    grid = np.linspace(lo, hi, 2**num_qubits)
    edges = np.concatenate([[lo], (grid[1:] + grid[:-1]) / 2.0, [hi]])
    masses = np.clip(np.diff(dist.cdf(edges)), 0.0, None)
    if not masses.sum() > 0:
        raise SimulationError("distribution has no mass on the discretisation grid")
    probabilities = masses / masses.sum()
    if op == ">":
        threshold = int(np.searchsorted(grid, limit, side="right"))
        exact = float(probabilities[threshold:].sum())
        continuous = float(dist.sf(np.array([limit]))[0])
    else:
        threshold = int(np.searchsorted(grid, limit, side="left"))
        exact = float(probabilities[:threshold].sum())
        continuous = float(dist.cdf(np.array([limit]))[0])
    return Discretisation(grid, probabilities, threshold, op, exact, continuous)


def distribution_loader(probabilities: np.ndarray) -> QuantumCircuit:
    """Grover-Rudolph circuit mapping |0...0> to sum_i sqrt(p_i) |i> (qubit 0 = LSB).

    Args:
        probabilities: (2^n,) non-negative masses summing to 1.

    Level ``l`` rotates qubit ``n-1-l`` by ``2 asin(sqrt(P(bit=1 | higher bits)))``, one
    angle per value of the ``l`` higher bits, with a uniformly controlled RY.
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import UCRYGate

    p = np.asarray(probabilities, dtype=float)
    n = int(round(math.log2(p.size)))
    if 2**n != p.size:
        raise SimulationError("number of probabilities must be a power of two")
    circuit = QuantumCircuit(n, name="load")
    for level in range(n):
        blocks = p.reshape(2**level, -1)  # row r = prefix r of the `level` most significant bits
        upper = blocks[:, blocks.shape[1] // 2 :].sum(axis=1)
        total = blocks.sum(axis=1)
        ratio = np.divide(upper, total, out=np.zeros_like(upper), where=total > 0)
        angles = 2.0 * np.arcsin(np.sqrt(np.clip(ratio, 0.0, 1.0)))
        target = n - 1 - level
        if level == 0:
            circuit.ry(float(angles[0]), target)
        else:
            controls = list(range(n - level, n))  # control value == prefix r (LSB first)
            circuit.append(UCRYGate([float(a) for a in angles]), [target, *controls])
    return circuit


def _tail_circuit(disc: Discretisation, num_qubits: int) -> QuantumCircuit:
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import IntegerComparatorGate

    n = num_qubits
    circuit = QuantumCircuit(max(2 * n, n + 1), name="A")
    circuit.compose(distribution_loader(disc.probabilities), range(n), inplace=True)
    size = 2**n
    geq = disc.op == ">"
    if 0 < disc.threshold < size:
        circuit.append(IntegerComparatorGate(n, disc.threshold, geq=geq), range(n + 1))
    elif (disc.threshold == 0) == geq:  # every state is in the tail
        circuit.x(n)
    return circuit


def build_tail_problem(
    disc: Discretisation, num_qubits: int
) -> tuple[EstimationProblem, QuantumCircuit, QuantumCircuit]:
    """Return the IAE problem, and the transpiled (u, cx) A and Grover circuits."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit.library import grover_operator
    from qiskit_algorithms import EstimationProblem

    a_op = transpile(
        _tail_circuit(disc, num_qubits), basis_gates=_BASIS, optimization_level=1, seed_transpiler=0
    )
    oracle = QuantumCircuit(a_op.num_qubits)
    oracle.z(num_qubits)  # phase flip on objective qubit == 1
    # The comparator returns its ancillas to |0> for every basis state, so the Grover iterate
    # never leaves the clean-ancilla subspace and the zero reflection only needs the state and
    # objective qubits (as qiskit-algorithms' default Grover operator does for ancillas);
    # this halves the size of Q compared with reflecting on all 2n qubits.
    grover = grover_operator(oracle, a_op, reflection_qubits=list(range(num_qubits + 1)))
    q_op = transpile(grover, basis_gates=_BASIS, optimization_level=1, seed_transpiler=0)
    problem = EstimationProblem(a_op, objective_qubits=[num_qubits], grover_operator=q_op)
    return problem, a_op, q_op


@dataclass
class QuantumResult:
    """Outcome of :func:`estimate_tail_probability`; ``to_dict()`` gives plain JSON."""

    estimate: float
    confidence_interval: tuple[float, float]
    exact_probability: float
    continuous_probability: float
    discretisation_error: float
    num_qubits: int
    total_qubits: int
    circuit_depth: int
    grover_depth: int
    max_depth: int
    oracle_queries: int
    shots: int
    circuits: int
    powers: list[int]
    epsilon: float
    alpha: float
    op: str
    limit: float
    seed: int | None
    grid: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with ``"engine": "quantum_iae"`` and every field."""
        out: dict[str, Any] = {"engine": "quantum_iae"}
        for key, value in self.__dict__.items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _check_quantum_args(
    op: str, num_qubits: int, epsilon: float, alpha: float, shots: int | None
) -> int:
    if op not in (">", "<"):
        raise SimulationError(f"unknown op {op!r}; use '>' or '<'")
    if isinstance(num_qubits, bool) or not isinstance(num_qubits, int):
        raise SimulationError("num_qubits must be an integer")
    if not 1 <= num_qubits <= MAX_QUBITS:
        raise SimulationError(f"num_qubits must be in 1..{MAX_QUBITS}, got {num_qubits}")
    if not (isinstance(epsilon, int | float) and 0 < epsilon <= 0.5):
        raise SimulationError(f"epsilon must be in (0, 0.5], got {epsilon!r}")
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise SimulationError(f"alpha must be in (0, 1), got {alpha!r}")
    shots = DEFAULT_SHOTS if shots is None else shots
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise SimulationError(f"shots must be a positive integer, got {shots!r}")
    return shots


def iae_max_rounds(epsilon: float, min_ratio: float = 2.0) -> int:
    """IAE's bound on its number of rounds (qiskit-algorithms ``IterativeAmplitudeEstimation``,
    ``max_rounds = int(log(min_ratio * pi / 8 / epsilon) / log(min_ratio)) + 1``)."""
    return max(int(math.log(min_ratio * math.pi / 8 / epsilon) / math.log(min_ratio)) + 1, 1)


@dataclass
class _RoundObserver:
    """Checks ``cancelled`` before and reports ``progress`` (in shots) after each IAE round."""

    shots: int
    rounds: int
    progress: Callable[[int, int], None] | None
    cancelled: Callable[[], bool] | None
    done: int = 0

    def before(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise SimulationCancelled(f"cancelled after {self.done} IAE rounds")

    def after(self) -> None:
        self.done += 1
        if self.progress is not None:
            planned = max(self.rounds, self.done) * self.shots
            self.progress(self.done * self.shots, planned)


class _ObservedSampler:
    """A SamplerV2 stand-in that runs each IAE round on ``sampler`` under ``observer``.

    IAE calls ``run([(circuit,)])`` once per round and then ``job.result()``; the job is
    resolved here so that progress is reported once the round's shots have actually run.
    """

    def __init__(self, sampler: Any, observer: _RoundObserver) -> None:
        self._sampler, self._observer = sampler, observer

    def run(self, pubs: Any, *, shots: int | None = None) -> Any:
        self._observer.before()
        job = self._sampler.run(pubs, shots=shots)
        job.result()  # cached by the job: IAE's own result() call returns the same object
        self._observer.after()
        return job


def _run_iae(
    problem: EstimationProblem, epsilon: float, alpha: float, shots: int, seed: int | None,
    observer: _RoundObserver,
) -> Any:
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer.primitives import SamplerV2
    from qiskit_algorithms import AlgorithmError, IterativeAmplitudeEstimation

    iae = IterativeAmplitudeEstimation(
        epsilon_target=epsilon,
        alpha=alpha,
        sampler=_ObservedSampler(SamplerV2(default_shots=shots, seed=seed), observer),
        transpiler=generate_preset_pass_manager(optimization_level=0, basis_gates=_BASIS),
    )
    try:
        return iae.estimate(problem)
    except AlgorithmError as exc:  # IAE wraps every sampler error, cancellation included
        if isinstance(exc.__cause__, SimulationCancelled):
            raise exc.__cause__ from None
        raise


def estimate_tail_probability(
    dist: dict[str, Any],
    limit: float,
    *,
    op: str = ">",
    num_qubits: int = 5,
    epsilon: float = 0.01,
    alpha: float = 0.05,
    seed: int | None = 0,
    shots: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> QuantumResult:
    """Estimate ``P(X op limit)`` for ``X ~ dist`` with IAE on the Aer simulator.

    Args:
        dist: input spec ``{"dist", "params"}`` (same as Monte Carlo inputs).
        limit: threshold, in the units of X. op: ``">"`` or ``"<"``.
        num_qubits: n, the distribution uses 2^n grid points (1..10); the circuit has 2n
            qubits (n state, 1 objective, n-1 comparator ancillas).
        epsilon: target half-width of the confidence interval (absolute, in (0, 0.5]).
        alpha: 1 - confidence level. seed: Aer sampler seed (None = random).
        shots: shots per IAE circuit (None -> 100).
        progress: called as ``progress(shots_done, shots_planned)`` after each IAE round;
            ``shots_planned`` is ``shots * max_rounds`` (IAE's own bound on its rounds, see
            :func:`iae_max_rounds`), so it is an upper bound and the run may end earlier.
        cancelled: checked before each IAE round; returning True aborts the run.

    Returns:
        :class:`QuantumResult` with the estimate, its interval, the exact discretised
        probability, the discretisation error, qubits, depths, oracle queries and time.

    Raises:
        SimulationError: bad spec or arguments, or a degenerate distribution.
        SimulationCancelled: ``cancelled()`` returned True.
    """
    started = time.perf_counter()
    shots = _check_quantum_args(op, num_qubits, epsilon, alpha, shots)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
        raise SimulationError(f"limit must be a finite number, got {limit!r}")
    disc = discretise(make_distribution(dist, "x"), num_qubits, float(limit), op)
    problem, a_op, q_op = build_tail_problem(disc, num_qubits)
    observer = _RoundObserver(shots, iae_max_rounds(epsilon), progress, cancelled)
    res = _run_iae(problem, epsilon, alpha, shots, seed, observer)
    low, high = (float(v) for v in res.confidence_interval)
    k_max = max(res.powers)
    return QuantumResult(
        estimate=float(res.estimation),
        confidence_interval=(low, high),
        exact_probability=disc.exact,
        continuous_probability=disc.continuous,
        discretisation_error=abs(disc.exact - disc.continuous),
        num_qubits=num_qubits,
        total_qubits=a_op.num_qubits,
        circuit_depth=a_op.depth(),
        grover_depth=q_op.depth(),
        max_depth=a_op.depth() + k_max * q_op.depth(),
        oracle_queries=int(res.num_oracle_queries),
        shots=shots,
        circuits=len(res.powers) - 1,
        powers=[int(k) for k in res.powers],
        epsilon=float(epsilon),
        alpha=float(alpha),
        op=op,
        limit=float(limit),
        seed=seed,
        grid={"low": float(disc.grid[0]), "high": float(disc.grid[-1]), "points": disc.grid.size},
        elapsed_s=time.perf_counter() - started,
    )
