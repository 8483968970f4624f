"""Benchmarks of the simulation engine (prints figures; no assertions on time).

1. Monte Carlo: 10,000 samples x 10 inputs with mixed distributions (normal, uniform,
   triangular, lognormal, weibull_min from scipy), a simple 3-output model, percentiles,
   histograms and two constraints. Median wall time over repeats on one core, next to the
   floor: drawing the same numbers directly with numpy's Generator. Target: < 25 ms.
2. Quantum: one IAE run (epsilon 0.01, alpha 0.05) for 4, 6 and 8 qubits: wall time
   (target < 5 s at 8 qubits) and absolute error, next to plain Monte Carlo run for the same
   wall-clock budget. Also prints the engine router's cost-model predictions next to the
   measurements.

Run: ``python benchmarks/simulation.py`` (from the repository root).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / qiskit-aer are imported

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulation.engine import estimate_tail_probability, run_monte_carlo  # noqa: E402
from simulation.engine.engine_router import iae_cost, mc_seconds  # noqa: E402

REPEATS = 25
N = 10_000
INPUTS = {
    "p0": {"dist": "normal", "params": {"mean": 10.0, "std": 2.0}},
    "p1": {"dist": "normal", "params": {"mean": 0.0, "std": 1.0}},
    "p2": {"dist": "uniform", "params": {"low": 0.0, "high": 5.0}},
    "p3": {"dist": "uniform", "params": {"low": -1.0, "high": 1.0}},
    "p4": {"dist": "triangular", "params": {"low": 0.0, "mode": 2.0, "high": 3.0}},
    "p5": {"dist": "triangular", "params": {"low": 1.0, "mode": 1.5, "high": 4.0}},
    "p6": {"dist": "lognormal", "params": {"mean": 0.0, "sigma": 0.5}},
    "p7": {"dist": "lognormal", "params": {"mean": 1.0, "sigma": 0.25}},
    "p8": {"dist": "weibull_min", "params": {"c": 1.5, "scale": 2.0}},
    "p9": {"dist": "weibull_min", "params": {"c": 3.0, "scale": 1.0}},
}
CONSTRAINTS = [
    {"metric": "load", "op": ">", "limit": 22.0},
    {"metric": "margin", "op": "<", "limit": 0.0},
]


def model(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A simple plant-like model: a sum, a product-difference and a ratio."""
    load = s["p0"] + s["p2"] + s["p4"] + s["p6"] + s["p8"]
    margin = s["p5"] * s["p7"] - s["p1"] - s["p9"]
    ratio = (s["p0"] + s["p3"]) / (1.0 + s["p6"])
    return {"load": load, "margin": margin, "ratio": ratio}


def numpy_floor(rng: np.random.Generator) -> None:
    """Draw the same 10 x 10,000 numbers with numpy's own samplers (no ppf, no summaries)."""
    rng.normal(10.0, 2.0, N), rng.normal(0.0, 1.0, N)
    rng.uniform(0.0, 5.0, N), rng.uniform(-1.0, 1.0, N)
    rng.triangular(0.0, 2.0, 3.0, N), rng.triangular(1.0, 1.5, 4.0, N)
    rng.lognormal(0.0, 0.5, N), rng.lognormal(1.0, 0.25, N)
    2.0 * rng.weibull(1.5, N), 1.0 * rng.weibull(3.0, N)


def median_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs (after a warm-up)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_monte_carlo() -> None:
    """Benchmark 1: engine vs numpy floor for 10,000 x 10 mixed inputs."""
    print("== 1. Monte Carlo: 10,000 samples x 10 inputs (one core) ==")

    def full() -> None:
        run_monte_carlo(model, INPUTS, constraints=CONSTRAINTS, n_samples=N, max_samples=N, seed=1)

    rng = np.random.default_rng(1)
    t_full = median_ms(full)
    t_floor = median_ms(lambda: numpy_floor(rng))
    result = run_monte_carlo(model, INPUTS, constraints=CONSTRAINTS, n_samples=N, max_samples=N)
    print(f"engine (sample + model + percentiles + histograms + 2 constraints): {t_full:7.2f} ms")
    print(f"floor  (numpy Generator draws of the same 100,000 numbers):        {t_floor:7.2f} ms")
    print(
        f"ratio engine/floor: {t_full / t_floor:.2f}x   target < 25 ms: "
        f"{'met' if t_full < 25 else 'MISSED'}"
    )
    print(
        f"worst RSE {result.rse:.4f}, P(load > 22) = {result.constraints[0].p_breach:.4f} "
        f"+- {result.constraints[0].stderr:.4f}"
    )
    per_draw = t_full / 1e3 / (N * len(INPUTS))
    print(
        f"all-in cost per draw: {per_draw:.2e} s; the engine router's cost model predicts "
        f"{mc_seconds(N, len(INPUTS)) * 1e3:.2f} ms for this run"
    )


def mc_for_budget(spec: dict, limit: float, budget_s: float) -> tuple[float, int]:
    """The engine's Monte Carlo estimate of P(X > limit), run in 100k-sample batches (fresh
    seeds) until ``budget_s`` of wall-clock time is spent."""
    constraint = [{"metric": "x", "op": ">", "limit": limit}]
    hits, n, seed, start = 0.0, 0, 0, time.perf_counter()
    while time.perf_counter() - start < budget_s or n == 0:
        r = run_monte_carlo(
            dict,
            {"x": spec},
            constraints=constraint,
            n_samples=100_000,
            max_samples=100_000,
            seed=seed,
        )
        hits += r.constraints[0].p_breach * r.n_samples
        n, seed = n + r.n_samples, seed + 1
    return hits / n, n


def bench_quantum() -> None:
    """Benchmark 2: IAE at 4/6/8 qubits vs Monte Carlo at equal wall-clock time."""
    print("\n== 2. Quantum IAE vs Monte Carlo at equal wall-clock (P(X > 1), X ~ N(0,1)) ==")
    spec, limit = {"dist": "normal", "params": {"mean": 0.0, "std": 1.0}}, 1.0
    exact_continuous = 0.15865525393145707
    header = (
        f"{'qubits':>6} {'time s':>7} {'IAE est':>8} {'|IAE-discr|':>11} {'|IAE-true|':>10} "
        f"{'discr err':>9} {'queries':>8} {'depth':>6} {'MC n':>11} {'|MC-true|':>9} "
        f"{'MC 1.96se':>9} {'model s':>8}"
    )
    print(header)
    for qubits in (4, 6, 8):
        start = time.perf_counter()
        r = estimate_tail_probability(spec, limit, num_qubits=qubits, epsilon=0.01, alpha=0.05)
        elapsed = time.perf_counter() - start
        p_mc, n_mc = mc_for_budget(spec, limit, elapsed)
        se = np.sqrt(p_mc * (1 - p_mc) / n_mc)
        modelled = iae_cost(0.01, 0.05, qubits, r.shots)["simulator_seconds"]
        print(
            f"{qubits:>6} {elapsed:>7.2f} {r.estimate:>8.4f} "
            f"{abs(r.estimate - r.exact_probability):>11.5f} "
            f"{abs(r.estimate - exact_continuous):>10.5f} {r.discretisation_error:>9.5f} "
            f"{r.oracle_queries:>8} {r.max_depth:>6} {n_mc:>11,} "
            f"{abs(p_mc - exact_continuous):>9.6f} {1.96 * se:>9.6f} {modelled:>8.2f}"
        )
    print("IAE target at 8 qubits: < 5 s. 'model s' = engine router's simulator-cost prediction.")


def main() -> None:
    """Pin to one core (where supported) and run both benchmarks."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    bench_monte_carlo()
    bench_quantum()


if __name__ == "__main__":
    main()
