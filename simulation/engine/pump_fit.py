"""Least-squares fit of one pump metric on its drivers (used by :mod:`.pump_model`).

For a metric ``y`` and drivers ``x_1..x_k`` (non-constant ones only) the model is
``y = b_0 + sum_j b_j x_j + e`` solved with :func:`numpy.linalg.lstsq` on standardised
drivers (for conditioning), then mapped back to physical units. Reported per metric:
``R^2 = 1 - SS_res / SS_tot``, the residual standard deviation, slope standard errors
``sqrt(diag(s^2 (A^T A)^-1))`` with ``s^2 = SS_res / (n - p)`` (ordinary least squares,
e.g. Seber & Lee, "Linear Regression Analysis", 2nd ed., ch. 3) and the empirical quantiles of
the residuals, used as the noise distribution in what-if runs.

A metric whose driver fit has ``R^2 < R2_MIN`` does not use the drivers at prediction time: its
noise is then ``y - mean(y)`` (intercept-only) and the what-if centres it on the metric's own
recent mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import SimulationError

__all__ = ["N_RESID_QUANTILES", "R2_MIN", "MetricFit", "finite_float", "fit_metric", "is_constant"]

R2_MIN = 0.1
N_RESID_QUANTILES = 101  # percentiles 0, 1, ..., 100 of the residuals


def is_constant(values: np.ndarray) -> bool:
    """True when the column has (numerically) no spread: ptp <= 1e-9 * max(1, |mean|)."""
    return float(np.ptp(values)) <= 1e-9 * max(1.0, abs(float(np.mean(values))))


@dataclass
class MetricFit:
    """Fitted relation of one metric to its drivers (all values in physical units).

    Attributes:
        metric: metric name. drivers: drivers actually used in the least-squares fit.
        intercept, slopes, slope_stderr: ``y = intercept + sum slopes[d] * x_d``.
        r2: R^2 of that fit (None when the metric is constant). uses_drivers: whether
            what-if predictions apply the slopes (``r2 >= R2_MIN``).
        mean: training mean of the metric. resid_std, resid_quantiles: noise of the model
            used for prediction (driver fit if ``uses_drivers`` else intercept-only).
        note: plain-language statement of how the metric is modelled.
    """

    metric: str
    drivers: list[str]
    intercept: float
    slopes: dict[str, float]
    slope_stderr: dict[str, float]
    r2: float | None
    uses_drivers: bool
    mean: float
    resid_std: float
    resid_quantiles: list[float] = field(repr=False)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricFit:
        """Inverse of :meth:`to_dict`. Raises SimulationError on missing/invalid fields."""
        try:
            fit = cls(**data)
            fit.resid_quantiles = [float(v) for v in fit.resid_quantiles]
            fit.slopes = {str(k): float(v) for k, v in fit.slopes.items()}
        except (TypeError, AttributeError, ValueError) as exc:
            raise SimulationError(f"invalid metric fit in model state: {exc}") from exc
        return fit


def _lstsq(y: np.ndarray, columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve on standardised columns; return (coef in std units, residuals, std errors)."""
    n = y.size
    design = np.column_stack([np.ones(n), *columns])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = max(n - design.shape[1], 1)
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.pinv(design.T @ design)
    return coef, resid, np.sqrt(np.clip(np.diag(cov), 0.0, None))


def _note(metric: str, r2: float | None, used: list[str], dropped: list[str]) -> str:
    if r2 is None:
        return f"{metric} is constant in the training data: predicted as that constant"
    if not used:
        why = f"driver(s) {dropped} constant in the training data" if dropped else "no drivers"
        return f"intercept-only ({why}): predicted from its own recent distribution"
    if r2 < R2_MIN:
        return (
            f"R^2 = {r2:.3f} < {R2_MIN}: barely depends on {used}; predicted from its own "
            "recent distribution (state mean + residual noise), slopes not applied"
        )
    return f"R^2 = {r2:.3f}: driven by {used}; slopes applied in what-if runs"


def fit_metric(
    metric: str, y: np.ndarray, candidates: dict[str, np.ndarray], constant: dict[str, bool]
) -> MetricFit:
    """Fit ``metric`` (array (n,)) on the non-constant ``candidates`` (name -> array (n,)).

    Returns:
        :class:`MetricFit`; intercept-only when every candidate driver is constant.
    """
    used = [d for d in candidates if not constant[d]]
    dropped = [d for d in candidates if constant[d]]
    mu = {d: float(candidates[d].mean()) for d in used}
    sd = {d: float(candidates[d].std()) for d in used}
    coef, resid, se = _lstsq(y, [(candidates[d] - mu[d]) / sd[d] for d in used])
    slopes = {d: float(coef[j + 1] / sd[d]) for j, d in enumerate(used)}
    intercept = float(coef[0] - sum(slopes[d] * mu[d] for d in used))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    # OLS with an intercept has 0 <= R^2 <= 1; clip the rounding noise of intercept-only fits.
    r2 = None if is_constant(y) or ss_tot == 0 else max(0.0, 1.0 - float(resid @ resid) / ss_tot)
    uses = bool(used) and r2 is not None and r2 >= R2_MIN
    noise = resid if uses else y - y.mean()
    return MetricFit(
        metric=metric,
        drivers=used,
        intercept=intercept,
        slopes=slopes,
        slope_stderr={d: float(se[j + 1] / sd[d]) for j, d in enumerate(used)},
        r2=r2,
        uses_drivers=uses,
        mean=float(y.mean()),
        resid_std=float(noise.std(ddof=1)) if noise.size > 1 else 0.0,
        resid_quantiles=np.percentile(noise, np.linspace(0, 100, N_RESID_QUANTILES)).tolist(),
        note=_note(metric, r2, used, dropped),
    )


def finite_float(value: Any, label: str) -> float:
    """Return ``value`` as a finite float or raise SimulationError naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SimulationError(f"{label} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise SimulationError(f"{label} must be finite, got {value!r}")
    return float(value)
