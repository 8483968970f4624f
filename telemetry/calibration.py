"""Choosing and calibrating the detector that watches an asset.

Each asset kind has one DetectorConfig (editable in admin). A detector that needs a normal
model is fitted on the asset's first ``calibration_rows`` rows (SKAB's convention: 400) or on
a declared normal period, and stored as an AssetCalibration; rows inside the calibration window
are never scored. The fit-free rolling z-score needs no calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from django.conf import settings
from django.db import transaction

from telemetry.detectors import (
    DETECTORS,
    BaseDetector,
    RollingZScore,
    build_detector,
    detector_from_state,
)
from telemetry.models import AssetCalibration, DetectorConfig
from telemetry.series import load_series
from twins.api.serializers import AssetSerializer
from twins.ledger import record_change
from twins.models import Asset

FIT_FREE = "zscore"


@dataclass
class Watch:
    """The detector ready to score an asset, and the calibration it was fitted on (if any).

    ``baseline`` maps metric → {"mean", "std"} of the calibration rows (empty for the z-score,
    whose baseline is its rolling window).
    """

    detector: BaseDetector
    name: str
    calibration: AssetCalibration | None
    baseline: dict[str, dict[str, float]]


def config_for(asset: Asset) -> DetectorConfig:
    """The detector configuration that watches ``asset``.

    The asset type's detector when it names one (``AssetType.detector``/``detector_params``,
    with the kind's calibration length), else the asset kind's stored DetectorConfig, else
    the seed's z-score baseline. The type's configuration is not saved: it is the type's.
    """
    config = DetectorConfig.objects.filter(asset_kind=asset.kind).first()
    asset_type = asset.asset_type if asset.asset_type_id else None
    if asset_type is not None and asset_type.detector:
        rows = config.calibration_rows if config else DetectorConfig().calibration_rows
        return DetectorConfig(asset_kind=asset.kind, detector=asset_type.detector,
                              params=asset_type.detector_params, calibration_rows=rows)
    return config or DetectorConfig(asset_kind=asset.kind, detector=FIT_FREE, params={})


def asset_type_errors(asset_type) -> dict[str, list[str]]:
    """``twins.asset_types`` validator: the type's detector and parameters build."""
    if not asset_type.detector:
        return {}
    try:
        build_detector(asset_type.detector, asset_type.detector_params)
    except ValueError as exc:
        return {"detector": [str(exc)]}
    except TypeError as exc:
        return {"detector_params": [str(exc)]}
    return {}


def _zscore(config: DetectorConfig) -> RollingZScore:
    params = {"window": settings.DETECTION_WINDOW, "threshold": settings.DETECTION_Z_THRESHOLD}
    return RollingZScore(**(params | config.params))


def _to_datetime(ts: np.datetime64) -> datetime:
    return ts.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def calibrate(
    asset: Asset, *, start: datetime | None = None, end: datetime | None = None, actor=None
) -> AssetCalibration | None:
    """Fit the asset's configured detector on a normal period and store it.

    Without ``start``/``end`` the period is the asset's first ``calibration_rows`` rows; returns
    None while fewer rows exist. With them, every row in [start, end] is used. Raises
    ``ValueError`` for a period with fewer than 20 rows or a detector that rejects the data.
    Audited and published as ``calibration.fitted``.
    """
    config = config_for(asset)
    series = load_series(asset, after=None, history=0, until=end)
    X, ts = series.X, series.ts
    if start is not None:
        keep = ts >= np.datetime64(start.replace(tzinfo=None))
        X, ts = X[keep], ts[keep]
    elif len(ts) < config.calibration_rows:
        return None
    else:
        X, ts = X[: config.calibration_rows], ts[: config.calibration_rows]
    if len(X) < 20:
        raise ValueError(f"a calibration period needs at least 20 rows, {asset} has {len(X)}")
    detector = build_detector(config.detector, config.params).fit(X)
    baseline = {m: {"mean": float(X[:, j].mean()), "std": float(X[:, j].std(ddof=1))}
                for j, m in enumerate(series.metrics)}
    with transaction.atomic():
        calibration, _ = AssetCalibration.objects.update_or_create(
            asset=asset,
            defaults={"detector": config.detector, "params": config.params, "n_rows": len(X),
                      "state": {"detector": detector.to_state(), "baseline": baseline},
                      "start": _to_datetime(ts[0]), "end": _to_datetime(ts[-1])},
        )
        record_change(actor=actor or "detector", action="calibration.fit",
                      resource_type="asset", resource_id=asset.pk, operation="updated",
                      twin=asset.twin, after=dict(AssetSerializer(asset).data),
                      reason=f"{config.detector} {config.params} fitted on {len(X)} rows "
                             f"from {calibration.start.isoformat()} "
                             f"to {calibration.end.isoformat()}")
    return calibration


def watch_for(asset: Asset) -> Watch | None:
    """The detector to score ``asset`` with now, calibrating it on first use.

    Returns None while a detector that needs calibration has too few rows to be fitted. A
    stored calibration whose detector or parameters no longer match the config is re-fitted.
    """
    config = config_for(asset)
    if config.detector == FIT_FREE:
        return Watch(_zscore(config), FIT_FREE, None, {})
    if not DETECTORS[config.detector].requires_fit:  # e.g. smoothed_z: its window is its model
        return Watch(build_detector(config.detector, config.params), config.detector, None, {})
    calibration = AssetCalibration.objects.filter(asset=asset).first()
    stale = calibration and (calibration.detector, calibration.params) != (config.detector,
                                                                           config.params)
    if calibration is None or stale:
        calibration = calibrate(asset)
        if calibration is None:
            return None
    state = calibration.state
    return Watch(detector_from_state(state["detector"]), calibration.detector, calibration,
                 state["baseline"])
