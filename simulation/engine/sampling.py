"""Drawing joint samples of named inputs: random, scrambled Sobol, antithetic, Gaussian copula.

All methods share one path: produce uniforms ``U`` of shape (d, n), optionally correlate a
subset of them through a Gaussian copula, then map each row through its marginal's inverse
CDF (``ppf``).

* ``random``: ``U`` from the seeded :class:`numpy.random.Generator`.
* ``sobol``: ``U`` from :class:`scipy.stats.qmc.Sobol` (Owen-scrambled, seeded from the
  generator); successive draws continue the same sequence, so doubling the sample size keeps
  the low-discrepancy structure (Owen, "Scrambling Sobol' and Niederreiter-Xing points",
  J. Complexity 14, 1998).
* ``antithetic``: half the uniforms are drawn, the other half are ``1 - u`` (Hammersley &
  Morton, 1956); for a monotone model this reduces the variance of the mean.
* copula: ``Z = Phi^-1(U)``, ``Z_c = L Z`` with ``L L^T = R`` (Cholesky of the requested
  correlation matrix ``R``, or a symmetric eigen square root when ``R`` is only positive
  semi-definite), ``U_c = Phi(Z_c)``. ``R`` is the correlation of the normal scores; for
  normal marginals it is also the Pearson correlation of the samples, for other marginals
  the Pearson correlation is close to but not exactly ``R`` (rank correlation is preserved).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import qmc

from .distributions import Distribution, make_distribution
from .errors import SimulationError

__all__ = ["METHODS", "Method", "SamplingPlan", "as_generator", "sample_inputs"]

Method = Literal["random", "sobol", "antithetic"]
METHODS: tuple[str, ...] = ("random", "sobol", "antithetic")
# Uniforms are clipped into [_U_EPS, 1 - _U_EPS] so that ppf never returns +-inf
# (Generator.random can return exactly 0.0).
_U_EPS = 2.0**-53
_PSD_TOL = 1e-10


def as_generator(rng_or_seed: Any) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` from a Generator, an int seed or None.

    Raises:
        SimulationError: for anything else (including bools and negative seeds).
    """
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if rng_or_seed is None:
        return np.random.default_rng()
    if isinstance(rng_or_seed, bool) or not isinstance(rng_or_seed, int | np.integer):
        raise SimulationError(f"seed must be an int, None or a numpy Generator: {rng_or_seed!r}")
    if rng_or_seed < 0:
        raise SimulationError(f"seed must be >= 0, got {rng_or_seed}")
    return np.random.default_rng(int(rng_or_seed))


@dataclass(frozen=True)
class CopulaFactor:
    """Square-root factor ``L`` (k x k, ``L @ L.T == R``) for the inputs at ``indices``."""

    indices: tuple[int, ...]
    factor: np.ndarray


def _correlation_matrix(correlation: Mapping[str, Any], k: int) -> np.ndarray:
    try:
        matrix = np.asarray(correlation["matrix"], dtype=float)
    except (TypeError, ValueError) as exc:
        raise SimulationError("correlation: 'matrix' must be a list of lists of numbers") from exc
    if matrix.shape != (k, k):
        raise SimulationError(
            f"correlation: matrix has shape {matrix.shape}, expected ({k}, {k}) for {k} names"
        )
    if not np.all(np.isfinite(matrix)):
        raise SimulationError("correlation: matrix has non-finite entries")
    if not np.allclose(matrix, matrix.T, atol=1e-8):
        raise SimulationError("correlation: matrix is not symmetric")
    if not np.allclose(np.diag(matrix), 1.0, atol=1e-8):
        raise SimulationError("correlation: matrix diagonal must be 1")
    if np.any(np.abs(matrix) > 1.0 + 1e-12):
        raise SimulationError("correlation: entries must lie in [-1, 1]")
    return matrix


def _square_root(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    if eigenvalues.min() < -_PSD_TOL:
        raise SimulationError(
            "correlation: matrix is not positive semi-definite "
            f"(smallest eigenvalue {eigenvalues.min():.4g})"
        )
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:  # PSD but singular, e.g. a perfect correlation of 1
        return eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))


def parse_correlation(correlation: Any, names: list[str]) -> CopulaFactor | None:
    """Validate ``{"names": [...], "matrix": [[...]]}`` and return its copula factor.

    Args:
        correlation: None (independent inputs) or a dict with ``names`` (k distinct input
            names) and ``matrix`` (k x k, symmetric, unit diagonal, entries in [-1, 1], PSD).
        names: the input names, in sampling order.

    Raises:
        SimulationError: wrong type/shape, unknown or duplicate names, not symmetric,
            diagonal not 1, or not positive semi-definite.
    """
    if correlation is None:
        return None
    if not isinstance(correlation, Mapping) or set(correlation) != {"names", "matrix"}:
        raise SimulationError("correlation must be a dict with exactly 'names' and 'matrix'")
    corr_names = correlation["names"]
    if not isinstance(corr_names, list | tuple) or not all(isinstance(n, str) for n in corr_names):
        raise SimulationError("correlation: 'names' must be a list of input names")
    unknown = [n for n in corr_names if n not in names]
    if unknown:
        raise SimulationError(f"correlation: unknown input names {unknown}; inputs are {names}")
    if len(set(corr_names)) != len(corr_names):
        raise SimulationError("correlation: 'names' contains duplicates")
    matrix = _correlation_matrix(correlation, len(corr_names))
    indices = tuple(names.index(n) for n in corr_names)
    return CopulaFactor(indices, _square_root(matrix))


def _sobol_engine(d: int, seed: int) -> qmc.Sobol:
    try:
        return qmc.Sobol(d, scramble=True, rng=seed)
    except TypeError:  # scipy < 1.15 names the argument ``seed``
        return qmc.Sobol(d, scramble=True, seed=seed)


@dataclass
class SamplingPlan:
    """Validated inputs + sampling method; draws successive batches of joint samples.

    Build with :meth:`build`. A plan is stateful only for ``sobol`` (the sequence continues
    across calls to :meth:`draw`).
    """

    names: list[str]
    dists: list[Distribution]
    copula: CopulaFactor | None
    method: str
    _sobol: qmc.Sobol | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls, inputs: Mapping[str, Any], correlation: Any = None, method: str = "random"
    ) -> SamplingPlan:
        """Validate ``inputs`` (name -> spec), ``correlation`` and ``method``.

        Raises:
            SimulationError: empty/non-dict inputs, bad spec, bad correlation, unknown method.
        """
        if not isinstance(inputs, Mapping) or not inputs:
            raise SimulationError("inputs must be a non-empty dict of name -> distribution spec")
        if method not in METHODS:
            raise SimulationError(f"unknown sampling method '{method}'; use one of {METHODS}")
        names = [str(name) for name in inputs]
        dists = [make_distribution(spec, name) for name, spec in inputs.items()]
        return cls(names, dists, parse_correlation(correlation, names), method)

    def _uniforms(self, n: int, rng: np.random.Generator) -> np.ndarray:
        d = len(self.names)
        if self.method == "sobol":
            if self._sobol is None:
                self._sobol = _sobol_engine(d, int(rng.integers(2**63)))
            with warnings.catch_warnings():  # n need not be a power of two
                warnings.filterwarnings("ignore", message=".*balance properties.*")
                return np.ascontiguousarray(self._sobol.random(n).T)
        if self.method == "antithetic":
            half = rng.random((d, (n + 1) // 2))
            return np.concatenate([half, 1.0 - half], axis=1)[:, :n]
        return rng.random((d, n))

    def draw(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw ``n`` joint samples; returns name -> float array of shape (n,)."""
        u = np.clip(self._uniforms(n, rng), _U_EPS, 1.0 - _U_EPS)
        if self.copula is not None:
            idx = list(self.copula.indices)
            u[idx] = np.clip(ndtr(self.copula.factor @ ndtri(u[idx])), _U_EPS, 1.0 - _U_EPS)
        pairs = zip(self.names, self.dists, strict=True)
        return {name: dist.ppf(u[j]) for j, (name, dist) in enumerate(pairs)}


def sample_inputs(
    inputs: Mapping[str, Mapping[str, Any]],
    n: int,
    rng_or_seed: np.random.Generator | int | None,
    *,
    correlation: Mapping[str, Any] | None = None,
    method: Method = "random",
) -> dict[str, np.ndarray]:
    """Draw ``n`` joint samples of the named inputs.

    Args:
        inputs: name -> ``{"dist": ..., "params": {...}}`` (see :mod:`.distributions`).
        n: number of samples (>= 1).
        rng_or_seed: a numpy Generator, an int seed or None (fresh entropy). The same seed
            gives bit-identical samples.
        correlation: optional ``{"names": [...], "matrix": [[...]]}`` Gaussian-copula
            correlation over a subset of the inputs.
        method: ``"random"``, ``"sobol"`` (scrambled, seeded) or ``"antithetic"``.

    Returns:
        name -> float64 array of shape (n,), in the order of ``inputs``.

    Raises:
        SimulationError: invalid spec, correlation, method, seed or ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise SimulationError(f"n must be a positive integer, got {n!r}")
    plan = SamplingPlan.build(inputs, correlation, method)
    return plan.draw(int(n), as_generator(rng_or_seed))
