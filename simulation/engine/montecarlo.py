"""Vectorised Monte Carlo with a convergence loop, tail probabilities and chart summaries.

Convergence criterion (per output metric ``m``, over all ``n`` samples so far)::

    rse_m = (std_m / sqrt(n)) / max(|mean_m|, std_m)

i.e. the standard error of the mean relative to the mean when the mean dominates the spread
(coefficient of variation <= 1), and relative to the spread itself when the mean is close to
zero compared with the noise (then "1 %" means the mean is pinned to 1 % of one standard
deviation; a pure relative error would need ~1/(CV^2 * target^2) samples and never converge
for a zero-mean output). A constant output has ``rse = 0``. The run is converged when the
worst ``rse_m`` is at most ``rse_target`` (1e-9 relative rounding tolerance); otherwise fresh
samples are appended so that the total doubles (capped at ``max_samples``). For ``sobol`` the
sequence simply continues.

Each batch is drawn and evaluated in chunks of at most ``CHUNK_SAMPLES`` (65,536, a power of
two so that Sobol chunks keep their balance) samples: ``cancelled()`` is checked before and
``progress()`` called after every chunk, so a long run reports progress and stops within one
chunk of a cancellation, and the model never sees more than one chunk at a time. Chunking is
part of the seeded stream (a batch of ``n`` uniforms is drawn as consecutive chunks), so the same
request and seed still give bit-identical results.

Tail probabilities ``P(metric op limit)`` are the sample fractions with the binomial standard
error ``sqrt(p (1 - p) / n)`` (exact for ``random``; conservative for ``sobol`` and
``antithetic``, whose true error is usually smaller).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SimulationCancelled, SimulationError
from .sampling import METHODS, SamplingPlan, as_generator

__all__ = [
    "CHUNK_SAMPLES",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_N_SAMPLES",
    "PERCENTILES",
    "ConstraintResult",
    "MetricSummary",
    "MonteCarloResult",
    "Model",
    "run_monte_carlo",
    "validate_constraints",
]

Model = Callable[[dict[str, np.ndarray]], Mapping[str, Any]]
PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95, 99)
CHUNK_SAMPLES = 65_536
DEFAULT_N_SAMPLES = 10_000
DEFAULT_MAX_SAMPLES = 160_000
OPS: tuple[str, ...] = (">", "<")


@dataclass(frozen=True)
class MetricSummary:
    """Summary of one output metric: moments, percentiles, histogram and RSE of the mean."""

    mean: float
    std: float
    percentiles: dict[int, float]
    edges: list[float]
    counts: list[int]
    rse: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (keys mean, std, p5..p99, histogram, rse)."""
        out: dict[str, Any] = {"mean": self.mean, "std": self.std}
        out.update({f"p{q}": v for q, v in self.percentiles.items()})
        out["histogram"] = {"edges": self.edges, "counts": self.counts}
        out["rse"] = self.rse
        return out


@dataclass(frozen=True)
class ConstraintResult:
    """P(metric op limit) with its binomial standard error."""

    metric: str
    op: str
    limit: float
    p_breach: float
    stderr: float

    @property
    def label(self) -> str:
        """Human-readable form, e.g. ``"Pressure > 1.2"``."""
        return f"{self.metric} {self.op} {self.limit:g}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with metric, op, limit, p_breach, stderr and label."""
        return {
            "metric": self.metric,
            "op": self.op,
            "limit": self.limit,
            "p_breach": self.p_breach,
            "stderr": self.stderr,
            "label": self.label,
        }


@dataclass
class MonteCarloResult:
    """Outcome of :func:`run_monte_carlo`; ``to_dict()`` is the JSON stored by the caller."""

    n_samples: int
    converged: bool
    rse: float
    rse_target: float
    seed: int
    method: str
    metrics: dict[str, MetricSummary]
    constraints: list[ConstraintResult]
    elapsed_s: float
    batches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: engine, n_samples, converged, rse, seed, method, metrics,
        constraints, elapsed_s (plus rse_target and batches)."""
        return {
            "engine": "monte_carlo",
            "n_samples": self.n_samples,
            "converged": self.converged,
            "rse": self.rse,
            "rse_target": self.rse_target,
            "seed": self.seed,
            "method": self.method,
            "batches": list(self.batches),
            "metrics": {m: s.to_dict() for m, s in self.metrics.items()},
            "constraints": [c.to_dict() for c in self.constraints],
            "elapsed_s": self.elapsed_s,
        }


def validate_constraints(constraints: Any) -> list[dict[str, Any]]:
    """Check the shape of ``[{"metric": str, "op": ">"|"<", "limit": number}, ...]``.

    Returns normalised copies (limit as float). Whether the metric exists is checked later
    against the model's outputs.

    Raises:
        SimulationError: not a list of dicts, missing/extra keys, unknown op, bad limit.
    """
    if constraints is None:
        return []
    if not isinstance(constraints, list | tuple):
        raise SimulationError("constraints must be a list of {metric, op, limit} dicts")
    out = []
    for i, c in enumerate(constraints):
        if not isinstance(c, Mapping) or set(c) != {"metric", "op", "limit"}:
            raise SimulationError(f"constraint #{i}: must have exactly 'metric', 'op', 'limit'")
        if c["op"] not in OPS:
            raise SimulationError(f"constraint #{i}: unknown op {c['op']!r}; use '>' or '<'")
        limit = c["limit"]
        numeric = int | float | np.integer | np.floating
        if isinstance(limit, bool) or not isinstance(limit, numeric) or not math.isfinite(limit):
            raise SimulationError(f"constraint #{i}: limit must be a finite number")
        out.append({"metric": str(c["metric"]), "op": c["op"], "limit": float(limit)})
    return out


def _check_outputs(raw: Any, n: int) -> dict[str, np.ndarray]:
    if not isinstance(raw, Mapping) or not raw:
        raise SimulationError("model must return a non-empty dict of metric -> array")
    out = {}
    for metric, values in raw.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 0:
            arr = np.full(n, float(arr))
        if arr.shape != (n,):
            raise SimulationError(f"model output '{metric}' has shape {arr.shape}, expected ({n},)")
        if not np.all(np.isfinite(arr)):
            raise SimulationError(f"model output '{metric}' has non-finite values")
        out[str(metric)] = arr
    return out


def _rse(values: np.ndarray) -> float:
    n = values.size
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    scale = max(abs(mean), std)
    return 0.0 if scale == 0.0 else std / math.sqrt(n) / scale


def _met(rse: float, target: float) -> bool:
    # rse == 1/sqrt(n) exactly for zero-mean outputs, so compare with a rounding tolerance.
    return bool(rse <= target * (1.0 + 1e-9))


def _summarise(values: np.ndarray, bins: int) -> MetricSummary:
    pct = np.percentile(values, PERCENTILES)
    counts, edges = np.histogram(values, bins=bins)
    return MetricSummary(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        percentiles={q: float(v) for q, v in zip(PERCENTILES, pct, strict=True)},
        edges=edges.tolist(),
        counts=counts.tolist(),
        rse=_rse(values),
    )


def _breach(values: np.ndarray, c: dict[str, Any]) -> ConstraintResult:
    hits = values > c["limit"] if c["op"] == ">" else values < c["limit"]
    p = float(hits.mean())
    stderr = math.sqrt(p * (1.0 - p) / values.size)
    return ConstraintResult(c["metric"], c["op"], c["limit"], p, stderr)


def _check_run_args(n_samples: int, max_samples: int, rse_target: float, bins: int) -> None:
    for label, value in (("n_samples", n_samples), ("max_samples", max_samples), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise SimulationError(f"{label} must be a positive integer, got {value!r}")
    if n_samples < 2:
        raise SimulationError("n_samples must be >= 2")
    if max_samples < n_samples:
        raise SimulationError(f"max_samples ({max_samples}) must be >= n_samples ({n_samples})")
    if not isinstance(rse_target, int | float) or not rse_target > 0:
        raise SimulationError(f"rse_target must be > 0, got {rse_target!r}")


def _resolve_seed(seed: int | None) -> int:
    if seed is None:  # draw one so the run can be reproduced from the reported seed
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SimulationError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(seed)


class _Accumulator:
    """Collects model outputs batch by batch."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}
        self.n = 0

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        if self.parts and set(outputs) != set(self.parts):
            raise SimulationError("model returned different metrics in different batches")
        for metric, values in outputs.items():
            self.parts.setdefault(metric, []).append(values)
        self.n += len(next(iter(outputs.values())))

    def arrays(self) -> dict[str, np.ndarray]:
        return {m: np.concatenate(p) if len(p) > 1 else p[0] for m, p in self.parts.items()}


def _run_batch(
    model: Model, plan: SamplingPlan, rng: np.random.Generator, acc: _Accumulator, batch: int,
    target: int, progress: Callable[[int, int], None] | None, cancelled: Callable[[], bool] | None,
) -> None:
    """Draw and evaluate ``batch`` samples in chunks (module docstring) into ``acc``."""
    end = acc.n + batch
    while acc.n < end:
        if cancelled is not None and cancelled():
            raise SimulationCancelled(f"cancelled after {acc.n} samples")
        size = min(CHUNK_SAMPLES, end - acc.n)
        acc.add(_check_outputs(model(plan.draw(size, rng)), size))
        if progress is not None:
            progress(acc.n, target)


def _check_constraint_metrics(constraints: list[dict[str, Any]], metrics: list[str]) -> None:
    for c in constraints:
        if c["metric"] not in metrics:
            raise SimulationError(
                f"constraint on unknown metric '{c['metric']}'; the model produces {metrics}"
            )


def run_monte_carlo(
    model: Model,
    inputs: Mapping[str, Mapping[str, Any]],
    *,
    constraints: list[dict[str, Any]] | None = None,
    n_samples: int = DEFAULT_N_SAMPLES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    rse_target: float = 0.01,
    seed: int | None = 0,
    method: str = "random",
    correlation: Mapping[str, Any] | None = None,
    bins: int = 40,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> MonteCarloResult:
    """Run ``model`` on joint samples of ``inputs`` until the means converge.

    Args:
        model: vectorised function, ``{input: array (n,)} -> {metric: array (n,)}``.
        inputs: name -> distribution spec (see :mod:`.distributions`).
        constraints: ``[{"metric", "op": ">"|"<", "limit"}]``; P(breach) is reported for each.
        n_samples: first batch size (>= 2). max_samples: hard cap on the total (>= n_samples).
        rse_target: convergence threshold on the worst per-metric RSE (module docstring).
        seed: int for reproducible runs; None draws a seed, which is reported in the result.
        method: ``"random"``, ``"sobol"`` or ``"antithetic"``. correlation: Gaussian copula
            ``{"names", "matrix"}``. bins: histogram bins per metric.
        progress: called as ``progress(done, total)`` after each chunk of each batch; ``total``
            is the sample count targeted by the current round (it grows when a round doubles n).
        cancelled: checked before every chunk; returning True aborts the run.

    Returns:
        :class:`MonteCarloResult` (``.to_dict()`` for JSON).

    Raises:
        SimulationError: invalid inputs/arguments/constraints, a constraint on a metric the
            model does not produce, or model outputs with a wrong shape or non-finite values.
        SimulationCancelled: ``cancelled()`` returned True.
    """
    started = time.perf_counter()
    _check_run_args(n_samples, max_samples, rse_target, bins)
    checked = validate_constraints(constraints)
    used_seed = _resolve_seed(seed)
    if method not in METHODS:
        raise SimulationError(f"unknown sampling method '{method}'; use one of {METHODS}")
    plan = SamplingPlan.build(inputs, correlation, method)
    rng, acc, batches = as_generator(used_seed), _Accumulator(), []
    target, rse = int(n_samples), math.inf
    while True:
        batch = target - acc.n
        _run_batch(model, plan, rng, acc, batch, target, progress, cancelled)
        batches.append(batch)
        if len(batches) == 1:
            _check_constraint_metrics(checked, list(acc.parts))
        arrays = acc.arrays()
        rse = max(_rse(v) for v in arrays.values())
        if _met(rse, rse_target) or target >= max_samples:
            break
        target = min(2 * target, int(max_samples))
    return MonteCarloResult(
        n_samples=acc.n,
        converged=_met(rse, rse_target),
        rse=float(rse),
        rse_target=float(rse_target),
        seed=used_seed,
        method=method,
        metrics={m: _summarise(v, int(bins)) for m, v in arrays.items()},
        constraints=[_breach(arrays[c["metric"]], c) for c in checked],
        elapsed_s=time.perf_counter() - started,
        batches=batches,
    )
