"""Univariate control charts fitted on a calibration window: median/MAD, EWMA and CUSUM.

Each metric is charted on its own; the per-point statistic is the maximum over metrics and the
contributions are the per-metric shares of the charted quantity.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .base import BaseDetector, RawScores
from .numerics import ar1_inflation, ewma_memory, ewma_standardised, standardise
from .params import check_bool, check_float

#: Consistency constant of the MAD for normal data, Φ⁻¹(0.75) ≈ 0.6745 (Iglewicz & Hoaglin 1993).
MAD_CONSTANT = 0.6745
#: MeanAD fallback factor when MAD = 0: sqrt(π/2) ≈ 1.253314, so that 1.253314·MeanAD
#: estimates σ for normal data (fallback used e.g. by IBM SPSS for the modified z-score).
MEANAD_FACTOR = 1.253314


def _calibration_rows(X: np.ndarray, minimum: int) -> None:
    if X.shape[0] < minimum:
        raise ValueError(f"need at least {minimum} calibration rows, got {X.shape[0]}")


def _mean_std(X: np.ndarray, autocorr: bool) -> dict[str, Any]:
    """Per-metric calibration mean and sample std (ddof=1), both ``(m,)``.

    With ``autocorr`` the std is multiplied by :func:`~.base.ar1_inflation`.
    """
    _calibration_rows(X, 3)
    scale = X.std(axis=0, ddof=1)
    if autocorr:
        scale = scale * ar1_inflation(X)
    return {"center": X.mean(axis=0), "scale": scale}


class _CalibratedDetector(BaseDetector):
    """Adds the ``autocorr`` parameter shared by the calibrated univariate detectors.

    ``autocorr`` (bool, default True): multiply each metric's calibration scale by the AR(1)
    long-run factor ``sqrt((1+ρ)/(1-ρ))`` (:func:`~.base.ar1_inflation`), so slowly wandering
    metrics get proportionally wider limits. ``False`` gives the textbook chart; for
    uncorrelated data the two agree (ρ ≈ 0).
    """

    defaults: ClassVar[dict[str, Any]] = {**BaseDetector.defaults, "autocorr": True}

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["autocorr"] = check_bool(p, "autocorr")
        return p


class MadDetector(_CalibratedDetector):
    """Median/MAD detector: modified z-score of Iglewicz & Hoaglin (1993).

    ``M_ij = 0.6745 (x_ij - median_j) / MAD_j`` with the median and MAD (median absolute
    deviation) of metric j over the calibration window. Iglewicz & Hoaglin, "How to Detect and
    Handle Outliers" (ASQC, 1993) recommend labelling |M| > 3.5 as potential outliers. When
    MAD_j = 0 (e.g. a coarsely quantised sensor) the scale falls back to 1.253314·MeanAD_j
    (``M = (x - median) / (1.253314 MeanAD)``); if that is 0 too the metric was constant and
    any departure scores ``±Z_CAP``.

    Parameters: ``threshold`` (float, default 3.5), ``autocorr`` (see ``_CalibratedDetector``;
    the scale MAD/0.6745 is multiplied by the AR(1) factor), ``smooth``, ``min_run``.

    Output: statistic = max_j |M_ij|; contributions = |M_ij| shares; kind by
    ratio r = statistic/threshold: r >= 5/3 "spike", r >= 4/3 "outlier", else "drift".
    """

    name: ClassVar[str] = "mad"
    defaults: ClassVar[dict[str, Any]] = {**_CalibratedDetector.defaults, "threshold": 3.5}

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["threshold"] = check_float(p, "threshold", 0.0)
        return p

    @property
    def threshold(self) -> float:
        return float(self.params["threshold"])

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        _calibration_rows(X, 3)
        med = np.median(X, axis=0)
        mad = np.median(np.abs(X - med), axis=0)
        meanad = np.mean(np.abs(X - med), axis=0)
        # sigma-equivalent scale: MAD/0.6745, or the MeanAD fallback
        scale = np.where(mad > 0, mad / MAD_CONSTANT, MEANAD_FACTOR * meanad)
        if self.params["autocorr"]:
            scale = scale * ar1_inflation(X)
        return {"center": med, "scale": scale}

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        f = self.fitted_
        mz = np.abs(standardise(X, f["center"], f["scale"]))
        return RawScores(statistic=mz.max(axis=1), contributions=mz)


class EwmaDetector(_CalibratedDetector):
    """EWMA control chart (Roberts 1959) per metric, on calibration-standardised data.

    With u = (x - μ0)/σ0 (calibration mean and sample std), the chart is
    ``e_i = λ u_i + (1 - λ) e_{i-1}``, ``e_0 = 0``, and the exact (time-varying) control limits
    are ``± L sqrt(λ/(2-λ) (1 - (1-λ)^{2i}))`` (Roberts, Technometrics 1(3), 1959; Montgomery,
    *Introduction to Statistical Quality Control*, ch. 9). Defaults λ = 0.2, L = 3 (Montgomery's
    common choice; λ in 0.05-0.25 detects small sustained shifts).

    The recursion starts at the first row of ``history`` (or of ``X``); it forgets at rate
    (1-λ), so :attr:`history_length` (rows until old data weigh < 0.1 %) suffices for row-by-row
    scoring to match batch scoring to about 0.1 %.

    Parameters: ``lam`` (float in (0, 1], default 0.2), ``L`` (float, default 3.0),
    ``autocorr`` (σ0 times the AR(1) factor), ``smooth``, ``min_run``.

    Output: statistic = max_j |e_ij| / sqrt(λ/(2-λ)(1-(1-λ)^{2i})) (EWMA in units of its own
    standard deviation), threshold = L; contributions = shares of that quantity;
    kind = "drift" for every point (the chart targets small persistent shifts).
    """

    name: ClassVar[str] = "ewma"
    defaults: ClassVar[dict[str, Any]] = {**_CalibratedDetector.defaults, "lam": 0.2, "L": 3.0}

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["lam"] = check_float(p, "lam", 0.0, 1.0)
        p["L"] = check_float(p, "L", 0.0)
        return p

    @property
    def threshold(self) -> float:
        return float(self.params["L"])

    def _own_history(self) -> int:
        return ewma_memory(self.params["lam"])

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return _mean_std(X, self.params["autocorr"])

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        f, lam = self.fitted_, self.params["lam"]
        u = standardise(X, f["center"], f["scale"])
        ratio = np.abs(ewma_standardised(u, lam))
        return RawScores(statistic=ratio.max(axis=1), contributions=ratio)

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(stat.shape[0], "drift", dtype="<U7")


def _one_sided_cusum(y: np.ndarray) -> np.ndarray:
    """``S_i = max(0, S_{i-1} + y_i)``, ``S_0 = 0``, column-wise on ``(n, m)``, vectorised.

    Lindley's identity: with C_i = y_1 + ... + y_i and C_0 = 0, S_i = C_i - min_{0<=j<=i} C_j.
    """
    c = np.cumsum(y, axis=0)
    run_min = np.minimum(np.minimum.accumulate(c, axis=0), 0.0)
    return np.maximum(c - run_min, 0.0)


class CusumDetector(_CalibratedDetector):
    """Two-sided tabular CUSUM (Page 1954) per metric, for slow drift and small shifts.

    With u = (x - μ0)/σ0 (calibration mean and sample std):
    ``C+_i = max(0, C+_{i-1} + u_i - k)``, ``C-_i = max(0, C-_{i-1} - u_i - k)``, alarm when
    either exceeds h. Page, "Continuous inspection schemes", Biometrika 41 (1954); Montgomery,
    *Introduction to Statistical Quality Control*, sec. 9.1: k = 0.5σ (detects a 1σ shift) and
    h = 4σ or 5σ. Defaults k = 0.5, h = 5 (in σ units).

    The sums start at 0 on the first row of ``history`` (or of ``X``). CUSUM memory is not
    finite, so :attr:`history_length` is a practical warm-up, not an exact bound; for
    continuous monitoring score batches with the full preceding run as history.

    Parameters: ``k`` (float >= 0, default 0.5), ``h`` (float > 0, default 5.0),
    ``autocorr`` (σ0 times the AR(1) factor), ``smooth``, ``min_run``.

    Output: statistic = max_j max(C+_ij, C-_ij) (σ units), threshold = h; contributions = shares
    of max(C+, C-) per metric; kind = "drift" for every point.
    """

    name: ClassVar[str] = "cusum"
    defaults: ClassVar[dict[str, Any]] = {**_CalibratedDetector.defaults, "k": 0.5, "h": 5.0}

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["k"] = check_float(p, "k", 0.0, open_low=False)
        p["h"] = check_float(p, "h", 0.0)
        return p

    @property
    def threshold(self) -> float:
        return float(self.params["h"])

    def _own_history(self) -> int:
        p = self.params
        return max(60, math.ceil(8 * p["h"] / max(p["k"], 0.1)))

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return _mean_std(X, self.params["autocorr"])

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        f, k = self.fitted_, self.params["k"]
        u = standardise(X, f["center"], f["scale"])
        s = np.maximum(_one_sided_cusum(u - k), _one_sided_cusum(-u - k))
        return RawScores(statistic=s.max(axis=1), contributions=s)

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(stat.shape[0], "drift", dtype="<U7")


__all__ = ["CusumDetector", "EwmaDetector", "MadDetector"]
