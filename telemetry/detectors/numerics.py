"""Numerical building blocks shared by the detectors (vectorised numpy/scipy, no state)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

#: Value used instead of ±inf when a metric deviates from a window or calibration set whose
#: spread is exactly zero (constant signal). Large enough to exceed any sensible threshold,
#: finite so that outputs stay JSON-serialisable and free of inf arithmetic.
Z_CAP = 1e6


def as_matrix(X: Any, name: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous float64 ``(n, m)`` array.

    A 1-D input of length n is read as one metric, shape ``(n, 1)``.

    Raises:
        ValueError: if ``X`` is not 1-D or 2-D, has no columns, or holds NaN/inf.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, m) with m >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or impute them first")
    return np.ascontiguousarray(arr)


def standardise(X: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(X - center) / scale`` per column, shapes ``(n, m)``, ``(m,)``, ``(m,)``.

    Where ``scale`` is 0 (a metric that was constant when the reference was taken) the result
    is 0 if ``X`` equals ``center`` and ``±Z_CAP`` otherwise; no division warning is raised.
    """
    dev = X - center
    safe = np.where(scale > 0, scale, 1.0)
    z = dev / safe
    const = scale <= 0
    if np.any(const):
        capped = np.sign(dev) * Z_CAP
        z = np.where(const, capped, z)
    return np.clip(z, -Z_CAP, Z_CAP)


#: Upper clip of the lag-1 autocorrelation in :func:`ar1_inflation` (factor <= sqrt(199) ≈ 14).
RHO_MAX = 0.99


def ar1_inflation(X: np.ndarray) -> np.ndarray:
    """Long-run scale factor ``sqrt((1 + ρ) / (1 - ρ))`` per column of ``(n, m)`` data.

    ρ is the lag-1 autocorrelation of the column, clipped to [0, ``RHO_MAX``]. For an AR(1)
    process with innovation-driven variance σ², σ² (1+ρ)/(1-ρ) is the long-run variance (the
    spectral density at frequency 0; e.g. Hamilton, *Time Series Analysis*, 1994, ch. 7).
    Multiplying a short calibration window's σ by this factor widens the limits of slowly
    wandering metrics (temperatures) whose level a few minutes of calibration cannot pin down;
    Montgomery (*Introduction to SQC*, ch. 10) shows that limits from short-term σ on
    autocorrelated data give excessive false alarms. Returns ``(m,)``, all >= 1.
    """
    dev = X - X.mean(axis=0)
    den = np.sum(dev * dev, axis=0)
    num = np.sum(dev[1:] * dev[:-1], axis=0)
    rho = np.divide(num, np.where(den > 0, den, 1.0))
    rho = np.clip(np.where(den > 0, rho, 0.0), 0.0, RHO_MAX)
    return np.sqrt((1.0 + rho) / (1.0 - rho))


def ewma_memory(lam: float) -> int:
    """Points after which an observation's EWMA weight (1-λ)^t falls below 0.1 %."""
    return 1 if lam >= 1.0 else math.ceil(math.log(1e-3) / math.log(1.0 - lam))


def ewma_standardised(U: np.ndarray, lam: float) -> np.ndarray:
    """Column-wise EWMA of standardised data, divided by its exact standard deviation.

    ``e_i = λ u_i + (1-λ) e_{i-1}``, ``e_0 = 0``, and for i.i.d. unit-variance ``u``
    ``Var(e_i) = λ/(2-λ) (1 - (1-λ)^{2i})`` (Roberts 1959; Lowry et al., Technometrics 34,
    1992 for the multivariate form). The result has unit variance at every i under control.
    ``U`` is ``(n, m)``; λ = 1 returns ``U`` unchanged.
    """
    if lam >= 1.0:
        return U
    return ewma_continue(U, lam, np.zeros(U.shape[1]), 0)[0]


def ewma_continue(
    U: np.ndarray, lam: float, e0: np.ndarray, i0: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ewma_standardised` continued from a carried level: the stream's rows ``i0 + 1 ..``.

    ``e0`` ``(m,)`` is the EWMA after the stream's first ``i0`` rows (zeros and 0 for a new
    stream). Returns the standardised EWMA of ``U`` ``(n, m)`` and the level after its last
    row. The recursion is evaluated sequentially (``scipy.signal.lfilter`` with initial state
    ``(1-λ) e0``), so splitting a series into consecutive calls gives bitwise the same values
    as one call. λ = 1 returns ``U`` and its last row.
    """
    if U.shape[0] == 0:
        return U, e0
    if lam >= 1.0:
        return U, U[-1].copy()
    e = lfilter([lam], [1.0, -(1.0 - lam)], U, axis=0, zi=((1.0 - lam) * e0)[None, :])[0]
    i = np.arange(i0 + 1, i0 + U.shape[0] + 1)
    sd = np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * i)))
    return e / sd[:, None], e[-1].copy()


def cusum_continue(
    y: np.ndarray, c0: np.ndarray, low0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sided CUSUM ``S_i = max(0, S_{i-1} + y_i)`` of ``(n, m)`` ``y``, continued.

    Lindley's identity: with the running sum ``C_i = C_{i-1} + y_i`` and its running minimum
    ``low_i = min(0, C_1, .., C_i)``, ``S_i = C_i - low_i``. ``c0``/``low0`` ``(m,)`` are the
    carried sum and minimum (zeros for a new stream). ``np.cumsum`` adds sequentially, so
    consecutive calls give bitwise the values of one call. Returns ``(S, C_last, low_last)``.
    """
    if y.shape[0] == 0:
        return y, c0, low0
    c = np.cumsum(np.vstack([c0[None, :], y]), axis=0)[1:]
    low = np.minimum(np.minimum.accumulate(c, axis=0), low0)
    return np.maximum(c - low, 0.0), c[-1].copy(), low[-1].copy()


def normalise_rows(weights: np.ndarray) -> np.ndarray:
    """Scale each row of a non-negative ``(n, m)`` array to sum to 1.

    Rows whose sum is 0 (or not finite) become uniform ``1/m``.
    """
    w = np.where(np.isfinite(weights), np.maximum(weights, 0.0), 0.0)
    total = w.sum(axis=1, keepdims=True)
    m = w.shape[1]
    ok = total > 0
    out = np.divide(w, np.where(ok, total, 1.0))
    return np.where(ok, out, 1.0 / m)


def rolling_median(stat: np.ndarray, window: int, start: int = 0) -> np.ndarray:
    """Causal rolling median of a ``(n,)`` array over ``window`` points (including the point).

    Returns the values for points ``start .. n-1`` (shape ``(n - start,)``). The first
    ``window - 1`` points of the series use the points available so far (expanding median).
    """
    n = stat.shape[0]
    if window <= 1 or n <= start:
        return stat[start:].copy()
    padded = np.concatenate([np.full(window - 1, np.nan), stat])
    views = sliding_window_view(padded, window)[start:]
    out = np.empty(n - start)
    head = max(0, min(window - 1, n) - start)  # points with an incomplete window
    if head:
        out[:head] = np.nanmedian(views[:head], axis=1)
    out[head:] = np.median(views[head:], axis=1)
    return out


def run_filter(raw_flags: np.ndarray, min_run: int) -> np.ndarray:
    """Keep a flag only if it ends a run of at least ``min_run`` consecutive raw flags.

    Causal: the decision at point i uses points i-min_run+1 .. i only. Shape ``(n,)`` bool.
    """
    if min_run <= 1:
        return raw_flags.copy()
    idx = np.arange(raw_flags.shape[0])
    last_false = np.maximum.accumulate(np.where(raw_flags, -1, idx))
    return (idx - last_false) >= min_run
