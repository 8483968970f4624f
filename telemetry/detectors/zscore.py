"""Rolling z-score: the seed baseline detector."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import BaseDetector, RawScores
from .numerics import Z_CAP
from .params import check_float, check_int

#: Rows per block when building window views, to bound memory at about
#: ``_BLOCK * window * m * 8`` bytes.
_BLOCK = 8192


def _block_stats(v: np.ndarray, nan: bool) -> tuple[np.ndarray, ...]:
    """Mean, sample std, min, max over the last axis of window views ``v``."""
    if not nan:
        return v.mean(axis=-1), v.std(axis=-1, ddof=1), v.min(axis=-1), v.max(axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return (
            np.nanmean(v, axis=-1),
            np.nanstd(v, axis=-1, ddof=1),
            np.nanmin(v, axis=-1),
            np.nanmax(v, axis=-1),
        )


def _window_stats(X: np.ndarray, window: int, start: int = 0) -> tuple[np.ndarray, ...]:
    """Mean, sample std, min and max of the ``window`` rows *before* each row of ``X``.

    ``X`` is ``(n, m)``; each returned array is ``(n, m)``. Entry i describes
    ``X[i-window:i]``; near the start fewer rows exist (NaN padding, NaN-aware reductions).
    Rows before ``start`` are not computed (left NaN).
    """
    n, m = X.shape
    padded = np.concatenate([np.full((window, m), np.nan), X[:-1] if n else X])
    views = sliding_window_view(padded, window, axis=0)  # (n, m, window)
    out = [np.full((n, m), np.nan) for _ in range(4)]
    head = min(window, n)
    for b in range(start, n, _BLOCK):
        stop = min(b + _BLOCK, n)
        parts = [(b, min(stop, head), True), (max(b, head), stop, False)]
        for lo, hi, nan in parts:
            if lo < hi:
                for arr, val in zip(out, _block_stats(views[lo:hi], nan), strict=True):
                    arr[lo:hi] = val
    return tuple(out)


def _rolling_z(X: np.ndarray, window: int, min_periods: int, start: int = 0) -> np.ndarray:
    """Column-wise :func:`rolling_zscore` of a checked ``(n, m)`` array (rows >= start)."""
    mean, std, lo, hi = _window_stats(X, window, start)
    count = np.minimum(np.arange(X.shape[0]), window)
    const = hi == lo
    safe = np.where(std > 0, std, 1.0)
    off = X - lo  # offset from the window's constant value where the window is flat
    z = np.where(const, np.sign(off) * Z_CAP, (X - mean) / safe)
    z = np.clip(z, -Z_CAP, Z_CAP)
    z[count < min_periods] = np.nan
    return z


def rolling_zscore(x: np.ndarray, window: int, min_periods: int = 2) -> np.ndarray:
    """Trailing z-score of each point against the ``window`` points before it.

    ``z[i] = (x[i] - mean(x[i-window:i])) / std(x[i-window:i])`` with the sample standard
    deviation (ddof=1). The window never contains point i itself, so a spike cannot mask
    itself. Vectorised with ``sliding_window_view`` (processed in blocks of rows to bound
    memory); there is no Python loop over points.

    Args:
        x: ``(n,)`` float64 series, oldest first, finite values.
        window: number of preceding points in the window, >= 2.
        min_periods: minimum number of preceding points needed for a value, in
            [2, window]; with fewer, ``z[i]`` is NaN. Defaults to 2 (the least for a std).

    Returns:
        ``(n,)`` float64 z-scores (dimensionless). Where the window is constant (std 0)
        ``z`` is 0 if ``x[i]`` equals that constant and ``±Z_CAP`` (1e6) otherwise: a change
        from a perfectly flat signal is maximally surprising, but kept finite so that scores
        and JSON stay well-defined. No division warnings are emitted.

    Raises:
        ValueError: if ``x`` is not 1-D or has non-finite values, or on invalid
            ``window``/``min_periods``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    window = check_int({"window": window}, "window", 2)
    min_periods = check_int({"min_periods": min_periods}, "min_periods", 2)
    if min_periods > window:
        raise ValueError(f"min_periods ({min_periods}) must be <= window ({window})")
    return _rolling_z(x[:, None], window, min_periods)[:, 0]


class RollingZScore(BaseDetector):
    """Seed baseline: per-metric trailing z-score, flag when max |z| >= threshold.

    Parameters (``__init__`` keywords): ``window`` (int, default 60 points), ``threshold``
    (float, default 3.0, in σ), ``min_periods`` (int, default 10, capped at ``window``), plus
    ``smooth`` and ``min_run`` (see :class:`~.base.BaseDetector`).

    Output:
        statistic: max over metrics of |z| (points without ``min_periods`` history get 0
            and are never flagged).
        score: ``min(1, |z| / 5)`` (seed rule, independent of ``threshold``).
        contributions: per-metric |z| shares.
        kind: |z| >= 5 "spike", |z| >= 4 "outlier", otherwise "drift" (seed rule).

    ``fit`` is optional (it only records the number of metrics); the detector has no
    calibration state.
    """

    name: ClassVar[str] = "zscore"
    defaults: ClassVar[dict[str, Any]] = {
        **BaseDetector.defaults,
        "window": 60,
        "threshold": 3.0,
        "min_periods": 10,
    }
    inclusive: ClassVar[bool] = True
    requires_fit: ClassVar[bool] = False

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["window"] = check_int(p, "window", 2)
        p["threshold"] = check_float(p, "threshold", 0.0)
        p["min_periods"] = min(check_int(p, "min_periods", 2), p["window"])
        return p

    @property
    def threshold(self) -> float:
        return float(self.params["threshold"])

    def _own_history(self) -> int:
        return int(self.params["window"])

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return {}

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        p = self.params
        z = _rolling_z(X, p["window"], p["min_periods"], start)
        az = np.nan_to_num(np.abs(z), nan=0.0)
        return RawScores(statistic=az.max(axis=1), contributions=az)

    def _score(self, stat: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, stat / 5.0)
