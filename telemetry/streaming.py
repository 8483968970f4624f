"""Streaming detection state kept in the database, and the asset's cadence.

A streaming detector's memory that history rows cannot rebuild exactly (EWMA level, CUSUM
sums, the adaptive reference, the tail of statistics behind smoothing and run rules, the alert
onset filter: armed, quiet, points since the last onset) lives in ``DetectorStreamState``, read
and written inside the caller's transaction (``detect_anomalies`` holds the asset's
``DetectionState`` row lock, so two runs never interleave). Durations of detection are counted in
sampling intervals of the asset's own data: the interval is inferred from the timestamps seen
(``telemetry.detectors.sampling_interval``) and stored, so a one-row batch still knows it.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from telemetry.calibration import Watch
from telemetry.detectors import BaseDetector, DetectorOutput, sampling_interval
from telemetry.detectors.streaming import Onsets, state_from_json, state_to_json
from telemetry.models import DetectorStreamState
from telemetry.series import Series
from twins.models import Asset

#: Episode gap, in sampling intervals, for detectors without an onset filter: at SKAB's 1 s
#: cadence it is the 30 s the seed used, and it scales with any other cadence.
DEFAULT_GAP_INTERVALS = 30
#: Interval assumed before two distinct timestamps have been seen (seconds).
FALLBACK_INTERVAL = 1.0
ASSET_LEVEL = ""


def _row(asset: Asset, name: str, params: dict) -> DetectorStreamState:
    row, _ = DetectorStreamState.objects.get_or_create(
        asset=asset, metric=ASSET_LEVEL, defaults={"detector": name, "params": params}
    )
    if (row.detector, row.params) != (name, params):
        row.detector, row.params, row.state, row.rows_seen = name, params, {}, 0
    return row


def _calibration_key(watch: Watch) -> str:
    cal = watch.calibration
    return "" if cal is None else f"{cal.pk}@{cal.end.isoformat()}"


def _stamp(ts: np.datetime64) -> str:
    return str(ts.astype("datetime64[us]"))


def stream_score(
    asset: Asset, watch: Watch, series: Series
) -> tuple[DetectorOutput, Onsets | None]:
    """Score the new rows of ``series`` continuing the asset's stream; persist its state.

    The asset's ``DetectorStreamState`` row holds the detector's stream carry
    (``BaseDetector.score_stream``: EWMA level, CUSUM sums, step count, adaptive reference,
    tail of statistics for smoothing and run rules), the onset filter's state (detectors with
    ``onset_filter()``), the calibration it belongs to and the timestamp of the last row
    scored. The carry is used only if it continues exactly where this call starts (same
    detector and parameters, same calibration, last scored row = last history row);
    otherwise the stream restarts on the history rows, which for the first call after
    calibration are the same whatever the batching. So one batch, 500-row batches and
    1-row batches give identical statistics, flags and onsets.

    Returns the detector output of the new rows and the onsets (None without an onset filter).
    """
    row = _row(asset, watch.name, watch.detector.params)
    saved, k = row.state or {}, series.n_history
    key = _calibration_key(watch)
    follows = k > 0 and saved.get("until") == _stamp(series.ts[k - 1])
    carry = saved.get("carry") if follows and saved.get("calibration") == key else None
    out, carry = watch.detector.score_stream(
        series.X[k:], history=series.X[:k] if k else None, carry=carry
    )
    found, onset = None, saved.get("onset")
    if hasattr(watch.detector, "onset_filter"):
        found, state = watch.detector.onset_filter().update(
            out.statistic / out.threshold, state_from_json(onset)
        )
        onset = state_to_json(state)
    row.state = {"carry": carry, "onset": onset, "calibration": key, "until": _stamp(series.ts[-1])}
    row.rows_seen += int(series.X.shape[0] - k)
    row.interval_seconds = sampling_interval(series.ts) or row.interval_seconds or FALLBACK_INTERVAL
    row.save()
    return out, found


def episode_gap(detector: BaseDetector, ts: np.ndarray, asset: Asset) -> timedelta:
    """Quiet time that ends an episode: the detector's ``rearm`` (or ``DEFAULT_GAP_INTERVALS``)
    sampling intervals of the asset's own data (inferred from ``ts``, else the stored interval)."""
    interval = sampling_interval(ts)
    if interval is None:
        stored = DetectorStreamState.objects.filter(asset=asset, metric=ASSET_LEVEL).first()
        interval = (stored and stored.interval_seconds) or FALLBACK_INTERVAL
    intervals = detector.params.get("rearm", DEFAULT_GAP_INTERVALS)
    return timedelta(seconds=intervals * interval)
