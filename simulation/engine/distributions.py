"""Input distributions, all sampled through their inverse CDF (ppf).

An input spec is a plain dict ``{"dist": <name>, "params": {...}}``. Built-ins:

=============  =====================================  ==========================================
name           params                                 meaning
=============  =====================================  ==========================================
normal         mean, std (std >= 0)                   N(mean, std^2); std == 0 is a point mass
uniform        low, high (low < high)                 U[low, high]
triangular     low, mode, high (low <= mode <= high)  triangular on [low, high], peak at mode
lognormal      mean, sigma (sigma > 0)                exp(N(mean, sigma^2)); ``mean``/``sigma``
                                                      are those of the *underlying* normal
empirical      quantiles (list, non-decreasing,       piecewise-linear quantile function through
               >= 2 values)                           equally spaced probabilities 0..1
=============  =====================================  ==========================================

Any other name is looked up in :mod:`scipy.stats` and must be a continuous distribution
(``rv_continuous``); its own keyword parameters are passed through, e.g.
``{"dist": "weibull_min", "params": {"c": 1.5, "scale": 2}}``.

Every distribution exposes ``ppf(u)`` for ``u`` in (0, 1) so that plain random, scrambled Sobol,
antithetic and Gaussian-copula sampling share one code path (see :mod:`.sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.stats
from scipy.special import ndtr, ndtri

from .errors import SimulationError

__all__ = ["BUILTIN_DISTRIBUTIONS", "Distribution", "make_distribution"]

Array = np.ndarray
BUILTIN_DISTRIBUTIONS: tuple[str, ...] = (
    "normal",
    "uniform",
    "triangular",
    "lognormal",
    "empirical",
)


@dataclass(frozen=True)
class Distribution:
    """A validated, univariate continuous distribution.

    Attributes:
        name: distribution name as given in the spec (``"normal"``, ``"weibull_min"``...).
        params: the validated parameters (plain floats, or a list for ``empirical``).
        ppf_fn: inverse CDF, maps an array of probabilities in (0, 1) to values (same shape).
        cdf_fn: CDF, maps an array of values to probabilities in [0, 1] (same shape).
        support: ``(lower, upper)`` bounds of the support; may be ``-inf`` / ``inf``.
    """

    name: str
    params: dict[str, Any]
    ppf_fn: Callable[[Array], Array] = field(repr=False)
    cdf_fn: Callable[[Array], Array] = field(repr=False)
    support: tuple[float, float]

    def ppf(self, u: Array) -> Array:
        """Inverse CDF. ``u``: array of probabilities in (0, 1); returns values, same shape."""
        return np.asarray(self.ppf_fn(np.asarray(u, dtype=float)), dtype=float)

    def cdf(self, x: Array) -> Array:
        """CDF P(X <= x). ``x``: array of values; returns probabilities, same shape."""
        return np.asarray(self.cdf_fn(np.asarray(x, dtype=float)), dtype=float)

    def sf(self, x: Array) -> Array:
        """Survival function P(X > x) = 1 - cdf(x) (continuous distributions)."""
        return 1.0 - self.cdf(x)

    @property
    def is_degenerate(self) -> bool:
        """True for a point mass (a normal with std == 0)."""
        return self.support[0] == self.support[1]


def _number(label: str, params: Mapping[str, Any], key: str) -> float:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SimulationError(f"{label}: parameter '{key}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SimulationError(f"{label}: parameter '{key}' must be finite, got {value!r}")
    return value


def _exact_params(label: str, params: Mapping[str, Any], keys: tuple[str, ...]) -> list[float]:
    missing = [k for k in keys if k not in params]
    extra = sorted(set(params) - set(keys))
    if missing or extra:
        raise SimulationError(
            f"{label}: expects parameters {list(keys)}; missing {missing}, unexpected {extra}"
        )
    return [_number(label, params, k) for k in keys]


def _normal(label: str, params: Mapping[str, Any]) -> Distribution:
    mean, std = _exact_params(label, params, ("mean", "std"))
    if std < 0:
        raise SimulationError(f"{label}: std must be >= 0, got {std}")
    if std == 0:
        return Distribution(
            "normal",
            {"mean": mean, "std": std},
            lambda u: np.full(np.shape(u), mean),
            lambda x: (x >= mean).astype(float),
            (mean, mean),
        )
    return Distribution(
        "normal",
        {"mean": mean, "std": std},
        lambda u: mean + std * ndtri(u),
        lambda x: ndtr((x - mean) / std),
        (-math.inf, math.inf),
    )


def _uniform(label: str, params: Mapping[str, Any]) -> Distribution:
    low, high = _exact_params(label, params, ("low", "high"))
    if not high > low:
        raise SimulationError(f"{label}: need low < high, got low={low}, high={high}")
    width = high - low
    return Distribution(
        "uniform",
        {"low": low, "high": high},
        lambda u: low + width * u,
        lambda x: np.clip((x - low) / width, 0.0, 1.0),
        (low, high),
    )


def _triangular(label: str, params: Mapping[str, Any]) -> Distribution:
    low, mode, high = _exact_params(label, params, ("low", "mode", "high"))
    if not (low <= mode <= high and low < high):
        raise SimulationError(
            f"{label}: need low <= mode <= high and low < high, got {low}, {mode}, {high}"
        )
    frozen = scipy.stats.triang(c=(mode - low) / (high - low), loc=low, scale=high - low)
    c = (mode - low) / (high - low)
    width, left, right = high - low, mode - low, high - mode

    def ppf(u: Array) -> Array:
        # Inverse of F(x) = (x-low)^2 / (width*left) for x <= mode and
        # F(x) = 1 - (high-x)^2 / (width*right) above it, solved for x.
        lower = low + np.sqrt(u * width * left)
        upper = high - np.sqrt((1.0 - u) * width * right)
        return np.where(u < c, lower, upper)

    params_out = {"low": low, "mode": mode, "high": high}
    return Distribution("triangular", params_out, ppf, frozen.cdf, (low, high))


def _lognormal(label: str, params: Mapping[str, Any]) -> Distribution:
    mean, sigma = _exact_params(label, params, ("mean", "sigma"))
    if not sigma > 0:
        raise SimulationError(f"{label}: sigma must be > 0, got {sigma}")
    return Distribution(
        "lognormal",
        {"mean": mean, "sigma": sigma},
        lambda u: np.exp(mean + sigma * ndtri(u)),
        lambda x: ndtr((np.log(np.maximum(x, 1e-300)) - mean) / sigma) * (x > 0),
        (0.0, math.inf),
    )


def _empirical(label: str, params: Mapping[str, Any]) -> Distribution:
    if set(params) != {"quantiles"}:
        raise SimulationError(f"{label}: expects exactly the parameter 'quantiles'")
    raw = params["quantiles"]
    try:
        q = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"{label}: 'quantiles' must be a list of numbers") from exc
    if q.ndim != 1 or q.size < 2 or not np.all(np.isfinite(q)):
        raise SimulationError(f"{label}: 'quantiles' must be >= 2 finite numbers")
    if np.any(np.diff(q) < 0):
        raise SimulationError(f"{label}: 'quantiles' must be non-decreasing")
    probs = np.linspace(0.0, 1.0, q.size)
    if q[0] == q[-1]:
        value = float(q[0])
        return Distribution(
            "empirical",
            {"quantiles": q.tolist()},
            lambda u: np.full(np.shape(u), value),
            lambda x: (x >= value).astype(float),
            (value, value),
        )
    return Distribution(
        "empirical",
        {"quantiles": q.tolist()},
        lambda u: np.interp(u, probs, q),
        lambda x: np.interp(x, q, probs),
        (float(q[0]), float(q[-1])),
    )


def _scipy(label: str, name: str, params: Mapping[str, Any]) -> Distribution:
    family = getattr(scipy.stats, name, None) if not name.startswith("_") else None
    if not isinstance(family, scipy.stats.rv_continuous):
        raise SimulationError(
            f"{label}: unknown distribution '{name}'; use one of "
            f"{', '.join(BUILTIN_DISTRIBUTIONS)} or a scipy.stats continuous distribution name"
        )
    values = {k: _number(label, params, k) for k in params}
    try:
        frozen = family(**values)
        probe = frozen.ppf(np.array([0.25, 0.5, 0.75]))
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"{label}: bad parameters for '{name}': {exc}") from exc
    if not np.all(np.isfinite(probe)):
        raise SimulationError(f"{label}: bad parameters for '{name}': {values} (ppf is NaN)")
    lo, hi = (float(b) for b in frozen.support())
    return Distribution(name, values, frozen.ppf, frozen.cdf, (lo, hi))


_BUILDERS: dict[str, Callable[[str, Mapping[str, Any]], Distribution]] = {
    "normal": _normal,
    "uniform": _uniform,
    "triangular": _triangular,
    "lognormal": _lognormal,
    "empirical": _empirical,
}


def make_distribution(spec: Mapping[str, Any], name: str = "input") -> Distribution:
    """Validate an input spec and return the matching :class:`Distribution`.

    Args:
        spec: ``{"dist": str, "params": {...}}`` (see the module docstring for the names).
        name: the input's name, used only to make error messages point at the right input.

    Returns:
        The validated distribution (ppf/cdf operate element-wise on numpy arrays).

    Raises:
        SimulationError: spec not a dict, unknown distribution name, missing/unexpected/
            non-numeric/non-finite parameters, or parameters outside the valid range
            (e.g. negative std, low >= high, NaN ppf for a scipy distribution).
    """
    label = f"input '{name}'"
    if not isinstance(spec, Mapping):
        raise SimulationError(f"{label}: spec must be a dict with 'dist' and 'params'")
    extra = sorted(set(spec) - {"dist", "params"})
    if extra:
        raise SimulationError(f"{label}: unexpected keys {extra}; expected 'dist' and 'params'")
    dist = spec.get("dist")
    params = spec.get("params", {})
    if not isinstance(dist, str) or not dist:
        raise SimulationError(f"{label}: 'dist' must be a distribution name, got {dist!r}")
    if not isinstance(params, Mapping):
        raise SimulationError(f"{label}: 'params' must be a dict, got {params!r}")
    builder = _BUILDERS.get(dist)
    if builder is not None:
        return builder(label, params)
    return _scipy(label, dist, params)
