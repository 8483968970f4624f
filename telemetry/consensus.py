"""Detector consensus on an anomaly episode, computed when the anomaly opens and stored on it.

Each detector in ``CONSENSUS_DETECTORS`` is fitted on the ``calibration_rows`` rows before the
episode and scores the episode's rows; it agrees if it flags any of them. Only applicable
detectors vote: multivariate ones (``MULTIVARIATE``, which model the correlation between
metrics) only on an asset with at least two metrics, and a detector whose fit rejects the data
(its documented ``ValueError``, e.g. PCA on one *varying* metric) abstains. The share counts
the voters only. ``policy.confidence`` reads the stored result instead of re-fitting.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from telemetry.detectors import build_detector
from telemetry.series import load_series
from twins.models import Asset

log = logging.getLogger(__name__)
CONSENSUS_DETECTORS = ("zscore", "mad", "ewma", "cusum", "pca_t2q")
MULTIVARIATE = frozenset({"pca_t2q"})
MIN_CALIBRATION_ROWS = 20


def _varying_metrics(calibration: np.ndarray) -> int:
    """Columns of ``calibration`` (n, m) that vary (finite, non-zero standard deviation)."""
    spread = np.nanstd(calibration, axis=0)
    return int(np.count_nonzero(np.isfinite(spread) & (spread > 0)))


def vote(name: str, calibration: np.ndarray, episode: np.ndarray) -> bool | None:
    """Whether detector ``name`` flags any row of ``episode`` ((k, m) float64, metric units)
    after fitting on ``calibration`` ((n, m)); None when it abstains (a multivariate detector
    on fewer than two varying metrics, or a fit that rejects the data)."""
    if name in MULTIVARIATE and _varying_metrics(calibration) < 2:
        return None
    try:
        detector = build_detector(name, None).fit(calibration)
    except ValueError:
        return None
    return bool(detector.score(episode, history=calibration).flags.any())


def votes_on(calibration: np.ndarray, episode: np.ndarray, n_metrics: int) -> dict[str, Any]:
    """Consensus of the applicable detectors on ``episode`` given ``calibration`` rows.

    Returns ``{"share": 0..1, "votes": {detector: True | False | None}, "applicable":
    [detectors], "calibration_rows": n, "episode_rows": k}``; a detector not applicable to an
    asset of ``n_metrics`` metrics, or abstaining, votes None and is left out of the share
    (0.0 when nobody votes, or with fewer than ``MIN_CALIBRATION_ROWS`` calibration rows or no
    episode row).
    """
    applicable = [d for d in CONSENSUS_DETECTORS if d not in MULTIVARIATE or n_metrics >= 2]
    result = {"share": 0.0, "votes": {}, "applicable": applicable,
              "calibration_rows": len(calibration), "episode_rows": len(episode)}
    if len(calibration) < MIN_CALIBRATION_ROWS or len(episode) == 0:
        return result
    votes = {d: vote(d, calibration, episode) if d in applicable else None
             for d in CONSENSUS_DETECTORS}
    cast = [v for v in votes.values() if v is not None]
    return result | {"share": sum(cast) / len(cast) if cast else 0.0, "votes": votes}


def episode_consensus(asset: Asset, *, started_at: datetime, last_seen_at: datetime,
                      calibration_rows: int | None = None) -> dict[str, Any]:
    """:func:`votes_on` for the episode ``[started_at, last_seen_at]`` (sensor time) of
    ``asset``, calibrated on the ``calibration_rows`` rows before it (default
    ``SIMULATION_CALIBRATION_WINDOW``, the window the what-if calibrates on)."""
    rows = calibration_rows or settings.SIMULATION_CALIBRATION_WINDOW
    series = load_series(asset, after=started_at - timedelta(microseconds=1), history=rows,
                         until=last_seen_at)
    calibration, episode = series.X[: series.n_history], series.X[series.n_history :]
    return votes_on(calibration, episode, len(series.metrics))


def consensus_on_open(asset: Asset, *, started_at: datetime,
                      last_seen_at: datetime) -> dict[str, Any] | None:
    """:func:`episode_consensus` for a newly opened anomaly, or None if it raised (logged):
    a consensus bug must not stop an anomaly from opening; policy then computes it itself."""
    try:
        with transaction.atomic():  # a savepoint: a failed query leaves detection's usable
            return episode_consensus(asset, started_at=started_at, last_seen_at=last_seen_at)
    except Exception:
        log.exception("consensus of the anomaly opening on %s failed", asset)
        return None
