"""PCA-based multivariate monitoring: Hotelling's T² and the Q statistic (SPE)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import stats

from .base import BaseDetector, RawScores
from .numerics import (
    Z_CAP,
    ar1_inflation,
    ewma_continue,
    ewma_memory,
    normalise_rows,
    standardise,
)
from .params import check_bool, check_choice, check_float

MODES = ("t2", "q", "t2q")
Q_LIMITS = ("jm", "box")


def t2_limit(k: int, n: int, alpha: float) -> float:
    """Upper control limit of Hotelling's T² for a new observation (Phase II).

    ``T²_α = k (n-1)(n+1) / (n (n-k)) · F_{1-α}(k, n-k)``, with k retained components and n
    calibration rows (Tracy, Young & Mason, J. Quality Technology 24, 1992; MacGregor &
    Kourti, Control Eng. Practice 3, 1995). ``alpha`` is the false-alarm probability per point.

    Raises:
        ValueError: if ``n <= k``.
    """
    if n <= k:
        raise ValueError(f"T² limit needs more calibration rows ({n}) than components ({k})")
    coef = k * (n - 1) * (n + 1) / (n * (n - k))
    return float(coef * stats.f.ppf(1.0 - alpha, k, n - k))


def q_limit(residual_eigs: np.ndarray, alpha: float, method: str = "jm") -> float:
    """Upper control limit of the Q statistic (squared prediction error).

    With θ_i = Σ_{j>k} λ_j^i over the residual eigenvalues of the calibration covariance:

    * ``"jm"``, Jackson & Mudholkar (Technometrics 21, 1979):
      ``h0 = 1 - 2 θ1 θ3 / (3 θ2²)``,
      ``Q_α = θ1 [c_α sqrt(2 θ2 h0²)/θ1 + 1 + θ2 h0 (h0 - 1)/θ1²]^{1/h0}``,
      c_α the standard normal (1-α) quantile.
    * ``"box"``, Box (Ann. Math. Stat. 25, 1954): ``Q_α = g χ²_{1-α}(h)``, ``g = θ2/θ1``,
      ``h = θ1²/θ2``.

    "jm" falls back to "box" when h0 <= 0. Returns 0 when all residual eigenvalues are 0.
    """
    lam = np.clip(np.asarray(residual_eigs, dtype=np.float64), 0.0, None)
    t1, t2, t3 = (float(np.sum(lam**i)) for i in (1, 2, 3))
    if t1 <= 0 or t2 <= 0:
        return 0.0
    h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2)
    if method == "jm" and h0 > 0:
        c = stats.norm.ppf(1.0 - alpha)
        inner = c * np.sqrt(2.0 * t2 * h0 * h0) / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1)
        return float(t1 * max(inner, 0.0) ** (1.0 / h0))
    g, h = t2 / t1, t1 * t1 / t2
    return float(g * stats.chi2.ppf(1.0 - alpha, h))


def _n_components(eigs: np.ndarray, variance: float, cap: int) -> int:
    """Smallest k whose components explain >= ``variance`` of the total, within [1, cap]."""
    total = eigs.sum()
    if total <= 0:
        return 1
    k = int(np.searchsorted(np.cumsum(eigs) / total, variance - 1e-12) + 1)
    return max(1, min(k, cap))


class PcaT2QDetector(BaseDetector):
    """PCA model of normal operation with Hotelling's T² and Q (SPE) control limits.

    Fit: standardise with the calibration mean and sample std (times the AR(1) long-run factor
    of :func:`~.base.ar1_inflation` when ``autocorr``; metrics that are constant in calibration
    are left out of the model, as in SKAB's T² baseline), PCA by SVD of the standardised
    calibration matrix, retain the k leading components explaining ``variance`` of the total
    variance (k <= m-1 when Q is used).
    Score: with t = P^T z (scores) and λ the retained eigenvalues,
    ``T² = Σ_a t_a²/λ_a`` (variation inside the model plane) and
    ``Q = ||z - P t||²`` (distance to the plane: a broken correlation).
    Limits: :func:`t2_limit` (F distribution) and :func:`q_limit` (Jackson-Mudholkar or Box),
    both at false-alarm probability ``alpha`` per point.

    Optional multivariate EWMA (``lam`` < 1): the standardised vectors are first filtered with
    ``e_i = λ z_i + (1-λ) e_{i-1}`` and divided by sqrt(λ/(2-λ)(1-(1-λ)^{2i})), which restores
    the calibration covariance for in-control data, then projected as above. This is the MEWMA
    of Lowry, Woodall, Champ & Rigdon (Technometrics 34, 1992) applied in the PCA model; using
    the unfiltered limits on it is an approximation (exact false-alarm rates of MEWMA charts
    need ARL tables), and it trades a delay of about 1/λ points for sensitivity to small
    persistent shifts.
    Parameters: ``variance`` (float in (0, 1], default 0.9), ``alpha`` (default 0.001, the
    99.9 % limits of SKAB's baseline; 1 false alarm per 1000 in-control points per statistic),
    ``mode`` ("t2", "q" or "t2q", default "t2q"), ``q_method`` ("jm" or "box", default "jm"),
    ``autocorr`` (bool, default True), ``lam`` (float in (0, 1], default 1 = no EWMA), plus
    ``smooth`` and ``min_run`` (rolling median / run rule on the statistic).

    Output:
        statistic: T² (mode "t2", threshold T²_α), Q (mode "q", threshold Q_α) or
            max(T²/T²_α, Q/Q_α) (mode "t2q", threshold 1). ``components`` also carries
            ``"t2"``, ``"q"`` and the limits are in ``fitted_``.
        contributions: Q contributions are the squared residuals per metric; T² contributions
            are the complete-decomposition terms ``z_j (P Λ⁻¹ t)_j`` (they sum to T²; negative
            terms are set to 0) (Qin, J. Chemometrics 17, 2003). In mode "t2q" both are
            normalised and weighted by their ratio to the limit.
        kind: ratio r = statistic/threshold: r >= 5/3 "spike", r >= 4/3 "outlier", else "drift".

    Raises:
        ValueError: in ``fit`` with fewer than 2 (varying) metrics, fewer than 3 rows, or not
            more rows than components.
    """

    name: ClassVar[str] = "pca_t2q"
    defaults: ClassVar[dict[str, Any]] = {
        **BaseDetector.defaults,
        "variance": 0.9,
        "alpha": 0.001,
        "mode": "t2q",
        "q_method": "jm",
        "autocorr": True,
        "lam": 1.0,
    }

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["variance"] = check_float(p, "variance", 0.0, 1.0)
        p["alpha"] = check_float(p, "alpha", 0.0, 0.5)
        p["mode"] = check_choice(p, "mode", MODES)
        p["q_method"] = check_choice(p, "q_method", Q_LIMITS)
        p["autocorr"] = check_bool(p, "autocorr")
        p["lam"] = check_float(p, "lam", 0.0, 1.0)
        return p

    def _own_history(self) -> int:
        return ewma_memory(self.params["lam"]) if self.params["lam"] < 1.0 else 0

    @property
    def threshold(self) -> float:
        if self.fitted_ is None:
            raise RuntimeError("pca_t2q: the threshold is known only after fit()")
        mode = self.params["mode"]
        if mode == "t2":
            return float(self.fitted_["t2_limit"])
        if mode == "q":
            return float(self.fitted_["q_limit"])
        return 1.0

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        n, m = X.shape
        if m < 2:
            raise ValueError("pca_t2q needs at least 2 metrics")
        if n < 3:
            raise ValueError(f"pca_t2q needs at least 3 calibration rows, got {n}")
        center, scale = X.mean(axis=0), X.std(axis=0, ddof=1)
        if self.params["autocorr"]:
            scale = scale * ar1_inflation(X)
        keep = scale > 0
        if keep.sum() < 2:
            raise ValueError("pca_t2q needs at least 2 metrics that vary in calibration")
        Z = standardise(X[:, keep], center[keep], scale[keep])
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        eigs = np.zeros(int(keep.sum()))
        eigs[: s.shape[0]] = s**2 / (n - 1)
        cap = eigs.shape[0] - 1 if self.params["mode"] != "t2" else eigs.shape[0]
        k = _n_components(eigs, self.params["variance"], cap)
        alpha = self.params["alpha"]
        return {
            "center": center,
            "scale": scale,
            "keep": keep.astype(np.float64),
            "components": vt[:k],
            "eigenvalues": np.maximum(eigs[:k], np.finfo(float).tiny),
            "t2_limit": t2_limit(k, n, alpha),
            "q_limit": q_limit(eigs[k:], alpha, self.params["q_method"]),
            "n_calibration": n,
        }

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        return self._raw_stream(X, 0, None)[0]

    def _raw_stream(
        self, X: np.ndarray, start: int, carry: dict[str, Any] | None
    ) -> tuple[RawScores, dict[str, Any]]:
        """Scores of rows ``start ..``; the MEWMA level and step count (``lam`` < 1) are the
        stream carry, so streamed results are bitwise those of one call."""
        f = self.fitted_
        keep = np.asarray(f["keep"]) > 0
        rec = carry or {"e": np.zeros(int(keep.sum())), "i": 0}
        Z = standardise(X[start:, keep], f["center"][keep], f["scale"][keep])
        Z, e = ewma_continue(Z, self.params["lam"], rec["e"], int(rec["i"]))
        raw = self._scores(Z, keep, X.shape[1])
        pad = np.zeros(start)
        return RawScores(
            statistic=np.concatenate([pad, raw.statistic]),
            contributions=np.vstack([np.zeros((start, X.shape[1])), raw.contributions]),
            components={k: np.concatenate([pad, v]) for k, v in raw.components.items()},
        ), {"e": e, "i": int(rec["i"]) + Z.shape[0]}

    def _scores(self, Z: np.ndarray, keep: np.ndarray, m: int) -> RawScores:
        f = self.fitted_
        P = np.atleast_2d(np.asarray(f["components"])).T  # (m', k)
        lam = np.asarray(f["eigenvalues"])
        T = Z @ P
        resid = Z - T @ P.T
        t2 = np.sum(T * T / lam, axis=1)
        q = np.sum(resid * resid, axis=1)
        c_t2 = Z * ((T / lam) @ P.T)
        c_q = resid * resid
        stat, contrib = self._combine(t2, q, c_t2, c_q)
        full = np.zeros((Z.shape[0], m))
        full[:, keep] = contrib
        return RawScores(statistic=stat, contributions=full, components={"t2": t2, "q": q})

    def _combine(
        self, t2: np.ndarray, q: np.ndarray, c_t2: np.ndarray, c_q: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Statistic and (unnormalised) contributions for the configured mode."""
        mode, f = self.params["mode"], self.fitted_
        if mode == "t2":
            return t2, np.maximum(c_t2, 0.0)
        if mode == "q":
            return q, c_q
        r_t2 = t2 / f["t2_limit"]
        q_lim = f["q_limit"]
        # a zero Q limit means the calibration data lay exactly in the model plane
        r_q = q / q_lim if q_lim > 0 else np.where(q > 1e-12, Z_CAP, 0.0)
        contrib = r_t2[:, None] * normalise_rows(c_t2) + r_q[:, None] * normalise_rows(c_q)
        return np.maximum(r_t2, r_q), contrib
