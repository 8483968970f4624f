"""Streaming pieces: the sampling interval of a series, alert onsets, the generic default.

Every time parameter here is counted in *sampling intervals* (rows) of the asset's own data, so
one configuration works for a pump read every second and for a plant metric read every hour;
:func:`sampling_interval` converts intervals to seconds where a duration is needed (e.g. the gap
that ends an episode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import BaseDetector, RawScores
from .numerics import Z_CAP
from .params import check_float, check_int

#: Rows per block when reducing window views (bounds memory to ~_BLOCK * window * 8 bytes).
_BLOCK = 4096
#: Smallest scale a window may have; below it the window counts as constant.
SCALE_FLOOR = 1e-9


def sampling_interval(ts: np.ndarray, recent: int = 500) -> float | None:
    """Typical seconds between readings: median of the positive gaps of the last ``recent`` stamps.

    Robust to jitter (a median), to repeated timestamps (zero gaps are dropped) and to holes
    (a few long gaps do not move a median). ``ts`` is ``(n,)`` ``datetime64`` (any unit),
    oldest first. Returns None with fewer than two distinct timestamps.
    """
    t = np.asarray(ts).astype("datetime64[us]").astype(np.int64)[-(recent + 1) :]
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    return float(np.median(gaps)) / 1e6


@dataclass
class OnsetState:
    """JSON-able state of :class:`OnsetFilter` for one stream.

    ``armed``: a new onset may fire; ``quiet``: consecutive points at or below the release level
    since the last onset; ``since``: points since the last onset (capped at 10⁹).
    """

    armed: bool = True
    quiet: int = 0
    since: int = 10**9


@dataclass
class Onsets:
    """Output of :meth:`OnsetFilter.update` for ``n`` points: ``onset`` and ``active``, ``(n,)``
    bool. ``onset`` marks the first point of an alert episode; ``active`` every point from an
    onset until the episode is released (hysteresis)."""

    onset: np.ndarray
    active: np.ndarray


class OnsetFilter:
    """One alert per episode: hysteresis plus a refractory period (cooldown), in intervals.

    An onset fires at a point whose ratio ``statistic / threshold`` exceeds 1 when the filter is
    armed and at least ``cooldown`` points have passed since the previous onset. It then disarms;
    it re-arms after ``rearm`` consecutive points with ratio <= ``release`` (< 1), so a signal
    flapping around the limit pages once. This is the two-threshold (Schmitt trigger) alarm
    deadband plus on-delay/off-delay of alarm management practice (ANSI/ISA-18.2-2016, sec. 10.4;
    EEMUA 191), with a refractory period as in NAB's detectors, which suppress alerts for a
    span after each one.

    Causal, and exact under any batching: the state after a batch is the state a point-by-point
    run would have.
    """

    def __init__(self, release: float, rearm: int, cooldown: int) -> None:
        self.release, self.rearm, self.cooldown = float(release), int(rearm), int(cooldown)

    def update(self, ratio: np.ndarray, state: OnsetState) -> tuple[Onsets, OnsetState]:
        """Run the filter over ``ratio`` ``(n,)`` (statistic / threshold) from ``state``.

        Returns the onsets/active flags and the new state (``state`` is not modified).
        """
        n = ratio.shape[0]
        onset = np.zeros(n, dtype=bool)
        active = np.zeros(n, dtype=bool)
        armed, quiet, since = state.armed, state.quiet, state.since
        for i, r in enumerate(ratio.tolist()):
            since = min(since + 1, 10**9)
            if r > 1.0:
                quiet = 0
                if armed and since >= self.cooldown:
                    onset[i], armed, since = True, False, 0
            elif r <= self.release:
                quiet += 1
                if quiet >= self.rearm:
                    armed = True
            else:
                quiet = 0
            active[i] = not armed
        return Onsets(onset, active), OnsetState(armed, quiet, since)


def state_to_json(state: OnsetState) -> dict[str, Any]:
    """:class:`OnsetState` → JSON dict."""
    return asdict(state)


def state_from_json(data: dict[str, Any] | None) -> OnsetState:
    """JSON dict (or None for a fresh stream) → :class:`OnsetState`."""
    if not data:
        return OnsetState()
    return OnsetState(bool(data["armed"]), int(data["quiet"]), int(data["since"]))


def _trailing_mean(X: np.ndarray, width: int) -> np.ndarray:
    """Mean of each row and the ``width - 1`` rows before it: ``(n, m)`` → ``(n-width+1, m)``."""
    views = sliding_window_view(X, width, axis=0)
    return np.concatenate([views[b : b + _BLOCK].mean(axis=-1) for b in
                           range(0, views.shape[0], _BLOCK)] or [np.empty((0, X.shape[1]))])


class SmoothedZScore(BaseDetector):
    """Generic default: z-score of a short moving average against a trailing window.

    For metric j, ``u_i = mean(x_{i-s+1..i})`` (``smooth_points`` = s), and
    ``z_i = (u_i - mean(u_{i-W..i-1})) / std(u_{i-W..i-1})`` over the ``window`` = W smoothed
    values before it (population std; below ``SCALE_FLOOR`` the window counts as constant and
    any change scores ±Z_CAP). It is NAB's "Windowed Gaussian" baseline (numenta/NAB,
    ``nab/detectors/gaussian``: a trailing-window Gaussian tail test, 39.6 on NAB) applied to a
    short moving average, which averages out single-sample noise as a Shewhart chart of subgroup
    means does (Montgomery, *Introduction to SQC*, ch. 6), and whose trailing window re-calibrates
    continuously to slow change. Flags are ``|z| > threshold``; alert onsets, hysteresis and the
    refractory period are :class:`OnsetFilter`'s job (``release``, ``rearm``, ``cooldown`` are
    kept here so one configuration carries them).

    Guard against an anomaly becoming normal: the window lags the scored point (it ends at i-1)
    and is W rows long, so a fault shorter than about W/4 rows barely moves it; a sustained shift
    is absorbed after ~W rows, by design (it is then the new level and has been alerted once).

    Parameters (all in sampling intervals except ``threshold``/``release``): ``window`` (int,
    default 200), ``smooth_points`` (int, default 4), ``threshold`` (σ, default 5.0),
    ``release`` (fraction of the threshold that ends an episode, default 0.4), ``rearm``
    (int, default 50), ``cooldown`` (int, default 100), plus ``smooth``/``min_run`` of
    :class:`BaseDetector`. Chosen on SKAB and the NAB development split
    (``benchmarks/nab_eval.py``).

    Output: statistic = max_j |z_ij| (0 until W + s - 1 rows exist), contributions = |z| shares,
    kind "outlier" for every point, so that one onset makes one episode (its size is in the
    score and the statistic). Needs no fit; :attr:`history_length` = W + s - 1 rows
    make row-by-row scoring identical to batch scoring.
    """

    name: ClassVar[str] = "smoothed_z"
    defaults: ClassVar[dict[str, Any]] = {
        **BaseDetector.defaults,
        "window": 200,
        "smooth_points": 4,
        "threshold": 5.0,
        "release": 0.4,
        "rearm": 50,
        "cooldown": 100,
    }
    requires_fit: ClassVar[bool] = False

    def _validate(self, p: dict[str, Any]) -> dict[str, Any]:
        p = super()._validate(p)
        p["window"] = check_int(p, "window", 2)
        p["smooth_points"] = check_int(p, "smooth_points", 1)
        p["threshold"] = check_float(p, "threshold", 0.0)
        p["release"] = check_float(p, "release", 0.0, 1.0, open_low=False)
        p["rearm"] = check_int(p, "rearm", 1)
        p["cooldown"] = check_int(p, "cooldown", 0)
        return p

    @property
    def threshold(self) -> float:
        return float(self.params["threshold"])

    def _own_history(self) -> int:
        return int(self.params["window"] + self.params["smooth_points"] - 1)

    def _fit(self, X: np.ndarray) -> dict[str, Any]:
        return {}

    def _kind(self, stat: np.ndarray, components: dict[str, np.ndarray]) -> np.ndarray:
        return np.full(stat.shape[0], "outlier", dtype="<U7")

    def onset_filter(self) -> OnsetFilter:
        """The :class:`OnsetFilter` carrying this configuration's release, rearm and cooldown."""
        p = self.params
        return OnsetFilter(p["release"], p["rearm"], p["cooldown"])

    def _raw(self, X: np.ndarray, start: int = 0) -> RawScores:
        p = self.params
        s, w = p["smooth_points"], p["window"]
        n, m = X.shape
        z = np.zeros((n, m))
        lo = max(start, w + s - 1)  # first row with a full window of smoothed values
        if lo < n:
            u = _trailing_mean(X[lo - w - s + 1 :], s)  # u[k] is the smoothed row lo - w + k
            views = sliding_window_view(u[:-1], w, axis=0)  # (n - lo, m, w)
            for b in range(0, n - lo, _BLOCK):
                v = views[b : b + _BLOCK]
                mean, std = v.mean(axis=-1), v.std(axis=-1)
                cur = u[w + b : w + b + v.shape[0]]
                flat = std < SCALE_FLOOR
                safe = np.where(flat, 1.0, std)
                zb = np.where(flat, np.where(cur == mean, 0.0, Z_CAP), np.abs(cur - mean) / safe)
                z[lo + b : lo + b + v.shape[0]] = np.minimum(zb, Z_CAP)
        return RawScores(statistic=z.max(axis=1), contributions=z)


__all__ = [
    "OnsetFilter",
    "OnsetState",
    "Onsets",
    "SmoothedZScore",
    "sampling_interval",
    "state_from_json",
    "state_to_json",
]
