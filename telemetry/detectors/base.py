"""Shared pieces of the anomaly detectors: output type, base class, post-processing.

Every detector in this package works on a 2-D float64 array ``X`` of shape ``(n, m)``:
``n`` time-ordered samples (rows, oldest first) of ``m`` metrics (columns). Units are whatever
the metrics carry; every statistic below is dimensionless (standardised).

The scoring pipeline of :class:`BaseDetector` is the same for every detector:

1. ``history`` (rows preceding ``X``) and ``X`` are stacked, and the detector computes its raw
   per-point statistic and per-metric contributions on the stacked array (``_raw``).
2. Optional causal smoothing: rolling median of the statistic over ``smooth`` points
   (SKAB's T²+Q baseline post-processes with a rolling median of width 5).
3. The statistic is compared with the control limit (``threshold``).
4. Optional persistence rule: a point is flagged only if it and the ``min_run - 1`` points before
   it all exceed the limit (a run rule in the spirit of the Western Electric rules).
5. The rows belonging to ``history`` are dropped from the output.

All steps are causal, so scoring row by row with enough history gives the same result as
scoring a whole array at once (see :attr:`BaseDetector.history_length`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .numerics import (
    as_matrix,
    normalise_rows,
    rolling_median,
    run_filter,
)
from .params import check_int

#: Score given to a point whose statistic sits exactly on the control limit. It mirrors the
#: seed baseline, where |z| = 3 (the limit) maps to score 3/5 = 0.6.
SCORE_AT_LIMIT = 0.6

#: Ratios statistic/threshold from which a point is called "outlier" and "spike". They mirror
#: the seed rule for |z| with threshold 3: |z| >= 4 outlier, |z| >= 5 spike.
OUTLIER_RATIO = 4.0 / 3.0
SPIKE_RATIO = 5.0 / 3.0

KINDS = ("spike", "drift", "outlier")
STATE_VERSION = 1


@dataclass
class DetectorOutput:
    """Result of :meth:`BaseDetector.score` for ``n`` scored rows and ``m`` metrics.

    Attributes:
        statistic: ``(n,)`` float64, the detector's native statistic after smoothing
            (e.g. max |z| over metrics, T², CUSUM S in σ units). Dimensionless.
        score: ``(n,)`` float64 in [0, 1]; ``SCORE_AT_LIMIT`` (0.6) on the control limit.
        flags: ``(n,)`` bool, True where the point is declared anomalous.
        threshold: the control limit the statistic is compared with.
        contributions: ``(n, m)`` float64, non-negative per-metric share of the statistic;
            every row sums to 1 (uniform shares where the statistic carries no information).
        kind: ``(n,)`` str array, one of ``"spike"``, ``"drift"``, ``"outlier"``; the rule is
            given in each detector's docstring.
        metric_index: ``(n,)`` int, column of the metric with the largest contribution.
        components: optional extra per-point arrays, each ``(n,)`` (e.g. ``"t2"`` and ``"q"``
            for the PCA detector, ``"raw"`` for the statistic before smoothing).
    """

    statistic: np.ndarray
    score: np.ndarray
    flags: np.ndarray
    threshold: float
    contributions: np.ndarray
    kind: np.ndarray
    metric_index: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.statistic.shape[0])


@dataclass
class RawScores:
    """What a detector's ``_raw`` hook returns for the stacked ``(N, m)`` array.

    ``statistic`` is ``(N,)``, ``contributions`` is ``(N, m)`` (any non-negative weights, they
    are normalised later) and ``components`` holds optional extra ``(N,)`` arrays.
    """

    statistic: np.ndarray
    contributions: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)


def score_to_severity(score: float) -> str:
    """Map a score in [0, 1] to a severity label (seed specification).

    ``>= 0.95`` "critical", ``>= 0.85`` "high", ``>= 0.70`` "medium", otherwise "low".
    NaN maps to "low".
    """
    s = float(score)
    if s >= 0.95:
        return "critical"
    if s >= 0.85:
        return "high"
    if s >= 0.70:
        return "medium"
    return "low"


def kind_from_ratio(ratio: np.ndarray) -> np.ndarray:
    """Default kind rule on ``ratio = statistic / threshold``, shape ``(n,)``.

    ``ratio >= 5/3`` "spike", ``ratio >= 4/3`` "outlier", otherwise "drift" (for the z-score
    baseline with threshold 3 this is |z| >= 5 spike, |z| >= 4 outlier).
    """
    kind = np.full(ratio.shape[0], "drift", dtype="<U7")
    kind[ratio >= OUTLIER_RATIO] = "outlier"
    kind[ratio >= SPIKE_RATIO] = "spike"
    return kind


class BaseDetector(ABC):
    """Common interface of all detectors (see the module docstring for the pipeline).

    Parameters shared by every detector (keyword arguments of ``__init__``):
        smooth (int, default 1): width of the causal rolling median applied to the statistic
            before thresholding; 1 disables it.
        min_run (int, default 1): a point is flagged only if the (smoothed) statistic exceeded
            the limit on it and on the ``min_run - 1`` points before it.

    Subclasses set ``name``, extend ``defaults`` and implement ``_fit``, ``_raw`` and
    ``threshold``; they may override ``_kind``, ``_score`` and ``_own_history``.

    Raises:
        ValueError: from ``__init__`` for unknown parameter names or invalid values.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {"smooth": 1, "min_run": 1}
    #: True when "statistic >= threshold" flags (z-score baseline), False for ">".
    inclusive: ClassVar[bool] = False
    #: False for detectors whose ``fit`` is optional (the rolling z-score).
    requires_fit: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {unknown}; accepted: {sorted(self.defaults)}"
            )
        self.params: dict[str, Any] = self._validate({**self.defaults, **params})
        self.fitted_: dict[str, Any] | None = None
        self.n_metrics_: int | None = None

    # ----------------------------------------------------------------- hooks
    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p["smooth"] = check_int(p, "smooth", 1)
        p["min_run"] = check_int(p, "min_run", 1)
        return p

    @abstractmethod
    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        """Fitted state (JSON-able) from calibration rows ``X`` ``(n, m)``."""

    @abstractmethod
    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        """Raw statistic ``(N,)`` and contributions ``(N, m)`` of the stacked rows ``X``.

        Only rows ``start ..`` are used; a detector may leave earlier rows at 0 to save work.
        """

    @property
    @abstractmethod
    def threshold(self) -> float:
        """Control limit of the (smoothed) statistic."""

    def _own_history(self) -> int:
        return 0

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return kind_from_ratio(stat / self.threshold)

    def _score(self, stat: np.ndarray) -> np.ndarray:
        return np.clip(SCORE_AT_LIMIT * stat / self.threshold, 0.0, 1.0)

    # ------------------------------------------------------------ public API
    @property
    def history_length(self) -> int:
        """Rows of ``history`` to pass so that row-by-row scoring matches batch scoring.

        Exact for the z-score, MAD and PCA detectors; for EWMA it covers the span after which
        older points weigh < 0.1 %, for CUSUM (infinite memory) it is a practical warm-up.
        """
        p = self.params
        return self._own_history() + (p["smooth"] - 1) + (p["min_run"] - 1)

    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` (or ``from_state`` with a fitted state) has run."""
        return self.fitted_ is not None

    def fit(self, X: np.ndarray) -> BaseDetector:
        """Calibrate on normal operation.

        Args:
            X: ``(n, m)`` float64, rows of normal operation (the calibration window).

        Returns:
            self.

        Raises:
            ValueError: if ``X`` has the wrong shape, non-finite values or too few rows.
        """
        X = as_matrix(X)
        self.fitted_ = self._fit(X)
        self.n_metrics_ = X.shape[1]
        return self

    def score(self, X: np.ndarray, history: np.ndarray | None = None) -> DetectorOutput:
        """Score rows ``X`` (``(n, m)``), optionally preceded by ``history`` (``(k, m)``).

        ``history`` rows are used as context (rolling windows, recursions, smoothing) but are
        not part of the output; pass at least :attr:`history_length` rows of it.

        Returns:
            :class:`DetectorOutput` with ``n`` rows.

        Raises:
            RuntimeError: if the detector needs ``fit`` and was not fitted.
            ValueError: on shape mismatch or non-finite values.
        """
        X = as_matrix(X)
        if self.requires_fit and self.fitted_ is None:
            raise RuntimeError(f"{self.name}: call fit() (or from_state()) before score()")
        m = X.shape[1]
        if self.n_metrics_ is not None and m != self.n_metrics_:
            raise ValueError(f"{self.name}: fitted on {self.n_metrics_} metrics, X has {m}")
        full = X
        if history is not None:
            H = as_matrix(history, "history")
            if H.shape[1] != m:
                raise ValueError(f"history has {H.shape[1]} columns, X has {m}")
            full = np.vstack([H, X])
        n, total = X.shape[0], full.shape[0]
        # rows needed: the output, min_run - 1 before it, and smooth - 1 before those
        first_flag = max(0, total - n - (self.params["min_run"] - 1))
        first_raw = max(0, first_flag - (self.params["smooth"] - 1))
        return self._finish(self._raw(full, first_raw), n, first_flag)

    def _exceeds(self, stat: np.ndarray) -> np.ndarray:
        thr = self.threshold
        return stat >= thr if self.inclusive else stat > thr

    def _finish(self, raw: RawScores, n: int, first_flag: int) -> DetectorOutput:
        smoothed = rolling_median(raw.statistic, self.params["smooth"], first_flag)
        flags = run_filter(self._exceeds(smoothed), self.params["min_run"])
        return self._output(raw, smoothed[smoothed.shape[0] - n :], flags[flags.shape[0] - n :])

    # ------------------------------------------------------------- streaming
    def _raw_stream(
        self, X: np.ndarray, start: int, carry: dict[str, Any] | None
    ) -> tuple[RawScores, dict[str, Any]]:
        """``_raw`` of rows ``start ..`` continuing the detector's recursions from ``carry``.

        Window detectors (no recursion) need nothing but the rows before ``start``; recursive
        ones (EWMA, CUSUM) override this and return what their next call continues from.
        """
        return self._raw(X, start), {}

    def score_stream(
        self,
        X: np.ndarray,
        history: np.ndarray | None = None,
        carry: dict[str, Any] | None = None,
    ) -> tuple[DetectorOutput, dict[str, Any]]:
        """Score the next rows ``X`` ``(n, m)`` of a stream; return the output and the new carry.

        ``carry=None`` starts a stream: it is :meth:`score` (recursions start on the first row
        of ``history``). With the carry returned by the previous call, recursions continue
        from their carried values (EWMA level, CUSUM sums, step count, adaptive reference),
        smoothing and the run rule from the carried tail of statistics; ``history`` (at least
        :attr:`history_length` rows before ``X``) is then only the window of window detectors.
        Every step is sequential, so any split of a series into consecutive calls gives
        bitwise the statistics and flags of one call. The carry is JSON-able (lists, floats).

        Raises:
            RuntimeError: if the detector needs ``fit`` and was not fitted.
            ValueError: on shape mismatch, non-finite values or a malformed carry.
        """
        X = as_matrix(X)
        if self.requires_fit and self.fitted_ is None:
            raise RuntimeError(f"{self.name}: call fit() (or from_state()) before score()")
        full = (
            X
            if history is None or len(history) == 0
            else np.vstack([as_matrix(history, "history"), X])
        )
        if self.n_metrics_ is not None and full.shape[1] != self.n_metrics_:
            raise ValueError(
                f"{self.name}: fitted on {self.n_metrics_} metrics, X has {full.shape[1]}"
            )
        n, start = X.shape[0], full.shape[0] - X.shape[0]
        try:
            fresh = carry is None
            raw, rec = self._raw_stream(
                full, 0 if fresh else start, None if fresh else _carried(carry["rec"])
            )
            tail = raw.statistic[:start] if fresh else np.asarray(carry["tail"], np.float64)
            run0 = 0 if fresh else int(carry["run"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{self.name}: malformed stream carry: {exc!r}") from exc
        seq = np.concatenate([tail, raw.statistic[start:]])
        smooth, min_run = self.params["smooth"], self.params["min_run"]
        smoothed = rolling_median(seq, smooth, 0 if fresh else tail.shape[0])
        exceed = np.concatenate([np.ones(run0, dtype=bool), self._exceeds(smoothed)])
        flags = run_filter(exceed, min_run)
        trailing = (
            exceed.shape[0] - 1 - int(np.flatnonzero(~exceed)[-1])
            if (~exceed).any()
            else exceed.shape[0]
        )
        new_carry = {
            "rec": {k: _to_json(v) for k, v in rec.items()},
            "tail": seq[seq.shape[0] - (smooth - 1) :].tolist() if smooth > 1 else [],
            "run": min(trailing, min_run),
        }
        out = self._output(raw, smoothed[smoothed.shape[0] - n :], flags[flags.shape[0] - n :])
        return out, new_carry

    def _output(self, raw: RawScores, stat: np.ndarray, flags: np.ndarray) -> DetectorOutput:
        n, thr = stat.shape[0], self.threshold
        start = raw.statistic.shape[0] - n
        comps = {"raw": raw.statistic[start:]}
        comps.update({k: v[start:] for k, v in raw.components.items()})
        contrib = normalise_rows(raw.contributions[start:])
        return DetectorOutput(
            statistic=stat,
            score=self._score(stat),
            flags=flags,
            threshold=float(thr),
            contributions=contrib,
            kind=self._kind(stat, comps),
            metric_index=np.argmax(contrib, axis=1).astype(np.int64),
            components=comps,
        )

    # ------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable snapshot: name, parameters and fitted arrays (as lists).

        Numbers are Python floats/ints, arrays nested lists, names str; floats survive a
        ``json.dumps``/``json.loads`` round trip exactly, so reloaded models score identically.
        """
        fitted = None
        if self.fitted_ is not None:
            fitted = {k: _to_json(v) for k, v in self.fitted_.items()}
        return {
            "name": self.name,
            "version": STATE_VERSION,
            "params": {k: _to_json(v) for k, v in self.params.items()},
            "n_metrics": self.n_metrics_,
            "fitted": fitted,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BaseDetector:
        """Rebuild a detector from :meth:`to_state` output.

        Raises:
            ValueError: if the state belongs to another detector, has an unknown version or
                missing keys, or carries invalid parameters.
        """
        try:
            name, version, params = state["name"], state["version"], state["params"]
            fitted, n_metrics = state.get("fitted"), state.get("n_metrics")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a detector state: {exc!r}") from exc
        if name != cls.name:
            raise ValueError(f"state is for detector {name!r}, not {cls.name!r}")
        if version != STATE_VERSION:
            raise ValueError(f"unsupported state version {version!r}")
        det = cls(**params)
        if fitted is not None:
            det.fitted_ = {k: _from_json(v) for k, v in fitted.items()}
        det.n_metrics_ = None if n_metrics is None else int(n_metrics)
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _carried(rec: dict[str, Any]) -> dict[str, Any]:
    """A stream carry's recursion state from JSON: lists → float64 arrays."""
    return {
        k: np.asarray(v, dtype=np.float64) if isinstance(v, list) else v for k, v in rec.items()
    }


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    return value
