"""Reading an asset's telemetry back as a dense (time x metric) matrix for the detectors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import connection

from telemetry.models import TelemetryEvent
from twins.models import Asset


@dataclass
class Series:
    """Dense telemetry of one asset.

    ``ts``: (n,) datetime64[us] UTC, strictly increasing; ``X``: (n, m) float64 in the metrics'
    units, gaps forward-filled; ``metrics``: the m column names; ``n_history``: how many leading
    rows are history (already scored) rather than new.
    """

    ts: np.ndarray
    X: np.ndarray
    metrics: list[str]
    n_history: int

    @property
    def new_ts(self) -> np.ndarray:
        return self.ts[self.n_history :]


def _history_cutoff(asset: Asset, after: datetime, history: int) -> datetime | None:
    """Timestamp just before the ``history`` most recent events at or before ``after``."""
    older = (
        TelemetryEvent.objects.filter(asset=asset, ts__lte=after)
        .order_by("-ts")
        .values_list("ts", flat=True)[history : history + 1]
    )
    return next(iter(older), None)


def _forward_fill(X: np.ndarray) -> np.ndarray:
    for j in range(X.shape[1]):
        column = X[:, j]
        missing = np.isnan(column)
        if missing.all():
            column[:] = 0.0
            continue
        if missing.any():
            index = np.where(~missing, np.arange(len(column)), 0)
            np.maximum.accumulate(index, out=index)
            column[:] = column[index]
            column[: np.argmax(~missing)] = column[np.argmax(~missing)]
    return X


def load_series(
    asset: Asset, *, after: datetime | None, history: int, until: datetime | None = None
) -> Series:
    """Samples of ``asset`` with ts > ``after`` (and <= ``until``), plus ``history`` prior rows.

    ``after=None`` loads everything from the start with no history rows. Metrics are the asset's
    declared metrics (or, if none are declared, those present in the data).
    """
    lower = _history_cutoff(asset, after, history) if after is not None else None
    sql = "SELECT ts, metric, value FROM telemetry_telemetrysample WHERE asset_id = %s"
    params: list = [asset.pk]
    if lower is not None:
        sql, params = sql + " AND ts > %s", [*params, lower]
    if until is not None:
        sql, params = sql + " AND ts <= %s", [*params, until]
    with connection.cursor() as cursor:
        cursor.execute(sql + " ORDER BY ts", params)
        rows = cursor.fetchall()
    metrics = asset.metric_names or sorted({r[1] for r in rows})
    if not rows:
        return Series(np.array([], "datetime64[us]"), np.empty((0, len(metrics))), metrics, 0)
    ts = np.array([r[0].replace(tzinfo=None) for r in rows], dtype="datetime64[us]")
    unique_ts, row_index = np.unique(ts, return_inverse=True)
    column = {name: j for j, name in enumerate(metrics)}
    X = np.full((len(unique_ts), len(metrics)), np.nan)
    for i, (_, metric, value) in zip(row_index, rows, strict=True):
        j = column.get(metric)
        if j is not None:
            X[i, j] = value
    n_history = 0
    if after is not None:
        boundary = np.datetime64(after.replace(tzinfo=None))
        n_history = int(np.searchsorted(unique_ts, boundary, "right"))
    return Series(unique_ts, _forward_fill(X), metrics, n_history)
