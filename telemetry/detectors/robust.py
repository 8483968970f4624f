"""Univariate control charts fitted on a calibration window: median/MAD, EWMA and CUSUM.

Each metric is charted on its own; the per-point statistic is the maximum over metrics and the
contributions are the per-metric shares of the charted quantity.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from .base import BaseDetector, RawScores
from .numerics import ar1_inflation, cusum_continue, ewma_continue, ewma_memory, standardise
from .params import check_bool, check_float, check_int

#: Consistency constant of the MAD for normal data, Φ⁻¹(0.75) ≈ 0.6745 (Iglewicz & Hoaglin 1993).
MAD_CONSTANT = 0.6745
#: MeanAD fallback factor when MAD = 0: sqrt(π/2) ≈ 1.253314, so that 1.253314·MeanAD
#: estimates σ for normal data (fallback used e.g. by IBM SPSS for the modified z-score).
MEANAD_FACTOR = 1.253314
#: Share of a block's points that must lie inside the control limits for the block to move the
#: adaptive reference (more than half: the block is mostly in control).
ADAPT_GUARD = 0.5


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


class _ChartDetector(_CalibratedDetector):
    """A recursive control chart (EWMA, CUSUM) on calibration-standardised data, streamed
    exactly and with an optional adaptive, guarded reference.

    Streaming: the chart's recursion (level, sums), the step count and the reference are the
    stream carry of :meth:`~.base.BaseDetector.score_stream`, so a series scored in any split
    of consecutive calls gives bitwise the statistics of one call; :meth:`score` is a new
    stream whose recursion starts on the first ``history`` row.

    Adaptive baseline (``adapt_every`` = B > 0 rows, ``adapt_rate`` = β): the stream is cut
    into blocks of B rows (aligned on the stream's step count, so independent of batching); at
    the end of a block in which more than half of the points stayed inside the control limit
    (raw statistic <= threshold), the reference mean moves towards the mean of those in-limit
    points, ``μ ← (1-β) μ + β mean(in-limit rows)`` (exponential forgetting of the in-control
    estimate: Hunter, "The exponentially weighted moving average", J. Quality Technology
    18(4), 1986; Bodenham & Adams, "Continuous monitoring for changepoints in data streams
    using adaptive estimation", Statistics and Computing 27, 2017). Guard: out-of-limit points
    never enter the estimate (the Phase I rule of dropping out-of-control points before
    revising limits, Montgomery, *Introduction to SQC*, ch. 6; updating in-control estimates
    only from in-control data, Jones-Farmer et al., J. Quality Technology 46(3), 2014), and a
    block mostly out of limits is skipped, so the reference is frozen while the chart is in
    alarm and a sustained anomaly keeps being flagged instead of becoming the new normal. A
    drift slow enough to stay mostly inside the limits is absorbed with a lag of about B/β
    rows; the scale stays the calibration's. The price: a fault that develops more slowly than
    that lag is partly absorbed too. B = 0 (default) keeps the calibration reference.
    """

    defaults: ClassVar[dict[str, Any]] = {
        **_CalibratedDetector.defaults,
        "adapt_every": 0,
        "adapt_rate": 0.1,
    }

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["adapt_every"] = check_int(p, "adapt_every", 0)
        p["adapt_rate"] = check_float(p, "adapt_rate", 0.0, 1.0)
        return p

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return _mean_std(X, self.params["autocorr"])

    def _start(self, m: int) -> dict[str, Any]:
        """Carry of a new stream: step 0, the calibration reference, an empty block."""
        return {
            "i": 0,
            "center": np.array(self.fitted_["center"], dtype=np.float64),
            "block_sum": np.zeros(m),
            "block_in": 0,
            "block_n": 0,
        }

    @abstractmethod
    def _chart(self, u: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
        """Per-metric chart statistic ``(n, m)`` of standardised rows ``u``; updates ``rec``.
        Each chart (EWMA, CUSUM) defines its own."""

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        return self._raw_stream(X, 0, None)[0]

    def _raw_stream(
        self, X: np.ndarray, start: int, carry: dict[str, Any] | None
    ) -> tuple[RawScores, dict[str, Any]]:
        rec = self._start(X.shape[1]) if carry is None else dict(carry)
        per_metric = np.zeros(X.shape)
        every, a, rows = self.params["adapt_every"], 0, X[start:]
        while a < rows.shape[0]:
            i = int(rec["i"])
            b = rows.shape[0] if not every else min(rows.shape[0], a + every - i % every)
            u = standardise(rows[a:b], rec["center"], self.fitted_["scale"])
            per_metric[start + a : start + b] = self._chart(u, rec)
            rec["i"] = i + (b - a)
            if every:
                self._adapt(rows[a:b], per_metric[start + a : start + b].max(axis=1), rec)
            a = b
        return RawScores(statistic=per_metric.max(axis=1), contributions=per_metric), rec

    def _adapt(self, seg: np.ndarray, stat: np.ndarray, rec: dict[str, Any]) -> None:
        inside = stat <= self.threshold
        kept = np.vstack([rec["block_sum"][None, :], seg * inside[:, None]])
        rec["block_sum"] = np.cumsum(kept, axis=0)[-1]  # sequential: exact under any split
        rec["block_in"] = int(rec["block_in"]) + int(inside.sum())
        rec["block_n"] = int(rec["block_n"]) + seg.shape[0]
        if rec["i"] % self.params["adapt_every"]:
            return
        if rec["block_in"] > ADAPT_GUARD * rec["block_n"]:
            beta = self.params["adapt_rate"]
            mean = rec["block_sum"] / rec["block_in"]
            rec["center"] = (1.0 - beta) * rec["center"] + beta * mean
        rec["block_sum"], rec["block_in"], rec["block_n"] = np.zeros(seg.shape[1]), 0, 0


class EwmaDetector(_ChartDetector):
    """EWMA control chart (Roberts 1959) per metric, on calibration-standardised data.

    With u = (x - μ0)/σ0 (calibration mean and sample std), the chart is
    ``e_i = λ u_i + (1 - λ) e_{i-1}``, ``e_0 = 0``, and the exact (time-varying) control limits
    are ``± L sqrt(λ/(2-λ) (1 - (1-λ)^{2i}))`` (Roberts, Technometrics 1(3), 1959; Montgomery,
    *Introduction to Statistical Quality Control*, ch. 9). Defaults λ = 0.2, L = 3 (Montgomery's
    common choice; λ in 0.05-0.25 detects small sustained shifts).

    :meth:`score` starts the recursion at the first row of ``history`` (or of ``X``);
    :meth:`score_stream` carries the level ``e`` (per metric) and the step count ``i`` between
    calls, so streamed results are bitwise those of one call (see :class:`_ChartDetector`,
    also for the adaptive reference ``adapt_every``/``adapt_rate``).

    Parameters: ``lam`` (float in (0, 1], default 0.2), ``L`` (float, default 3.0),
    ``autocorr`` (σ0 times the AR(1) factor), ``adapt_every``, ``adapt_rate``, ``smooth``,
    ``min_run``.

    Output: statistic = max_j |e_ij| / sqrt(λ/(2-λ)(1-(1-λ)^{2i})) (EWMA in units of its own
    standard deviation), threshold = L; contributions = shares of that quantity;
    kind = "drift" for every point (the chart targets small persistent shifts).
    """

    name: ClassVar[str] = "ewma"
    defaults: ClassVar[dict[str, Any]] = {**_ChartDetector.defaults, "lam": 0.2, "L": 3.0}

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

    def _start(self, m: int) -> dict[str, Any]:
        return {**super()._start(m), "e": np.zeros(m)}

    def _chart(self, u: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
        z, rec["e"] = ewma_continue(u, self.params["lam"], rec["e"], int(rec["i"]))
        return np.abs(z)

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(stat.shape[0], "drift", dtype="<U7")


class CusumDetector(_ChartDetector):
    """Two-sided tabular CUSUM (Page 1954) per metric, for slow drift and small shifts.

    With u = (x - μ0)/σ0 (calibration mean and sample std):
    ``C+_i = max(0, C+_{i-1} + u_i - k)``, ``C-_i = max(0, C-_{i-1} - u_i - k)``, alarm when
    either exceeds h. Page, "Continuous inspection schemes", Biometrika 41 (1954); Montgomery,
    *Introduction to Statistical Quality Control*, sec. 9.1: k = 0.5σ (detects a 1σ shift) and
    h = 4σ or 5σ. Defaults k = 0.5, h = 5 (in σ units).

    :meth:`score` starts the sums at 0 on the first row of ``history`` (or of ``X``); CUSUM
    memory is not finite, so :meth:`score_stream` carries both running sums and their running
    minima per metric (Lindley form, :func:`~.numerics.cusum_continue`) between calls and
    streamed results are bitwise those of one call (see :class:`_ChartDetector`).

    Parameters: ``k`` (float >= 0, default 0.5), ``h`` (float > 0, default 5.0),
    ``autocorr`` (σ0 times the AR(1) factor), ``adapt_every``, ``adapt_rate``, ``smooth``,
    ``min_run``.

    Output: statistic = max_j max(C+_ij, C-_ij) (σ units), threshold = h; contributions = shares
    of max(C+, C-) per metric; kind = "drift" for every point.
    """

    name: ClassVar[str] = "cusum"
    defaults: ClassVar[dict[str, Any]] = {**_ChartDetector.defaults, "k": 0.5, "h": 5.0}

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

    def _start(self, m: int) -> dict[str, Any]:
        zero = np.zeros(m)
        return {**super()._start(m), "up": zero, "up_low": zero, "down": zero, "down_low": zero}

    def _chart(self, u: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
        k = self.params["k"]
        up, rec["up"], rec["up_low"] = cusum_continue(u - k, rec["up"], rec["up_low"])
        down, rec["down"], rec["down_low"] = cusum_continue(-u - k, rec["down"], rec["down_low"])
        return np.maximum(up, down)

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(stat.shape[0], "drift", dtype="<U7")


__all__ = ["CusumDetector", "EwmaDetector", "MadDetector"]
