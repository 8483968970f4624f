"""Streaming detection state kept in the database, and the asset's cadence.

A streaming detector's memory that history rows cannot rebuild exactly (the alert onset
filter: armed, quiet, points since the last onset) lives in ``DetectorStreamState``, read and
written inside the caller's transaction (``detect_anomalies`` holds the asset's
``DetectionState`` row lock, so two runs never interleave). Durations of detection are counted in
sampling intervals of the asset's own data: the interval is inferred from the timestamps seen
(``telemetry.detectors.sampling_interval``) and stored, so a one-row batch still knows it.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from telemetry.detectors import BaseDetector, sampling_interval
from telemetry.detectors.streaming import Onsets, state_from_json, state_to_json
from telemetry.models import DetectorStreamState
from twins.models import Asset

#: Episode gap, in sampling intervals, for detectors without an onset filter: at SKAB's 1 s
#: cadence it is the 30 s the seed used, and it scales with any other cadence.
DEFAULT_GAP_INTERVALS = 30
#: Interval assumed before two distinct timestamps have been seen (seconds).
FALLBACK_INTERVAL = 1.0
ASSET_LEVEL = ""


def _row(asset: Asset, name: str, params: dict) -> DetectorStreamState:
    row, _ = DetectorStreamState.objects.get_or_create(
        asset=asset, metric=ASSET_LEVEL, defaults={"detector": name, "params": params})
    if (row.detector, row.params) != (name, params):
        row.detector, row.params, row.state, row.rows_seen = name, params, {}, 0
    return row


def stream_onsets(
    asset: Asset, name: str, detector: BaseDetector, ratio: np.ndarray, ts: np.ndarray
) -> tuple[Onsets, float]:
    """Run the detector's onset filter over new points, carrying its state across calls.

    Args:
        asset: the asset scored (its ``DetectorStreamState`` row is created on first use).
        name: the detector's configured name (a changed name or parameters resets the state).
        detector: a detector with ``onset_filter()`` (e.g. ``SmoothedZScore``).
        ratio: ``(n,)`` statistic / threshold of the new points, oldest first.
        ts: ``(k,)`` datetime64 timestamps of the rows loaded (history and new), for the cadence.

    Returns:
        The onsets/active flags of the new points and the sampling interval in seconds.
    """
    row = _row(asset, name, detector.params)
    seen = sampling_interval(ts)
    interval = seen or row.interval_seconds or FALLBACK_INTERVAL
    found, state = detector.onset_filter().update(ratio, state_from_json(row.state))
    row.state, row.rows_seen = state_to_json(state), row.rows_seen + int(ratio.shape[0])
    row.interval_seconds = interval
    row.save()
    return found, interval


def episode_gap(detector: BaseDetector, ts: np.ndarray, asset: Asset) -> timedelta:
    """Quiet time that ends an episode: the detector's ``rearm`` (or ``DEFAULT_GAP_INTERVALS``)
    sampling intervals of the asset's own data (inferred from ``ts``, else the stored interval)."""
    interval = sampling_interval(ts)
    if interval is None:
        stored = DetectorStreamState.objects.filter(asset=asset, metric=ASSET_LEVEL).first()
        interval = (stored and stored.interval_seconds) or FALLBACK_INTERVAL
    intervals = detector.params.get("rearm", DEFAULT_GAP_INTERVALS)
    return timedelta(seconds=intervals * interval)
