"""Chart data of the asset page: min/max/mean per time bucket over a chosen range, with gaps.

Read through ``telemetry.queries.aggregate`` (the aggregate API's own query, rollups for long
ranges), never by loading the raw history: each bucket keeps its minimum and maximum, so a
one-sample spike survives at any zoom (every-k-th thinning dropped it). Ranges are in sensor
time and end at the asset's newest reading, not at the wall clock: a replayed asset (the SKAB
demo) carries historical timestamps, and "the last hour" means the last hour of its data.

A gap is drawn as a gap: between two non-empty buckets further apart than
``GAP_FACTOR`` x max(bucket width, the asset's sampling interval) a null point is inserted,
which the chart does not join across.

The live ranges (last hour, day, week, all: they end at the newest reading) are extended in
the browser from the feed's ``asset.state`` events (``live_extension``): each newer reading is
appended as its own point (min = max = mean = value) with the same gap rule; a custom range is
a fixed span of the past and stays as drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

from telemetry.queries import BUCKETS, AggregateRequest, aggregate, select_series

#: Range choices: name → (label, span; None = the asset's whole history).
RANGES = {"1h": ("Last hour", timedelta(hours=1)), "24h": ("Last day", timedelta(days=1)),
          "7d": ("Last week", timedelta(days=7)), "all": ("All", None)}
DEFAULT_RANGE = "24h"
#: Aim for about this many buckets across a chart (about one per two pixels).
TARGET_BUCKETS = 400
GAP_FACTOR = 2.5
FUNCTIONS = ["min", "max", "avg"]


@dataclass
class Window:
    """The chosen range in sensor time: ``start``..``end``, its ``bucket`` name and width."""

    name: str
    start: datetime
    end: datetime
    bucket: str

    @property
    def width(self) -> timedelta:
        return BUCKETS[self.bucket]


def choose_bucket(span: timedelta, interval_s: float | None = None) -> str:
    """The narrowest bucket giving at most ``TARGET_BUCKETS`` over ``span``, and no narrower
    than the sampling interval (a bucket per reading at most)."""
    floor = timedelta(seconds=interval_s or 0)
    for name, width in BUCKETS.items():
        if width >= floor and span / width <= TARGET_BUCKETS:
            return name
    return "7d"


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is not None and is_naive(moment):
        moment = make_aware(moment)
    return moment


def choose_window(params, first: datetime | None, last: datetime | None,
                  interval_s: float | None) -> Window | None:
    """The window asked for by ``params`` (``range`` in RANGES, or ``custom`` with ``start``
    and ``end`` ISO times); None when the asset has no telemetry."""
    if first is None or last is None:
        return None
    name = params.get("range") or DEFAULT_RANGE
    start, end = first, last
    if name == "custom":
        start = _when(params.get("start")) or first
        end = _when(params.get("end")) or last
        if end <= start:
            start, end = end, start
    else:
        name = name if name in RANGES else DEFAULT_RANGE
        span = RANGES[name][1]
        if span is not None:
            start = max(first, last - span)
    end = max(end, start + timedelta(seconds=1))
    return Window(name, start, end, choose_bucket(end - start, interval_s))


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


def _with_gaps(series: dict, gap_s: float) -> dict:
    """Columnar ``t`` (epoch seconds), ``min``, ``max``, ``avg`` with a null row in each gap."""
    out = {"t": [], "min": [], "max": [], "avg": []}
    values = series["values"]
    previous = None
    for k, ts in enumerate(series["ts"]):
        t = _epoch(ts)
        if previous is not None and t - previous > gap_s:
            for column in ("min", "max", "avg"):
                out[column].append(None)
            out["t"].append((previous + t) / 2)
        out["t"].append(t)
        for column in ("min", "max", "avg"):
            out[column].append(values[column][k])
        previous = t
    return out


def gap_seconds(window: Window, interval_s: float | None) -> float:
    """Readings further apart than this (s) are drawn with a gap between them: ``GAP_FACTOR``
    x max(bucket width, sampling interval). The page's live extension uses the same rule."""
    return GAP_FACTOR * max(window.width.total_seconds(), interval_s or 0)


def live_extension(asset, window: Window, interval_s: float | None) -> dict | None:
    """What ``static/asset_charts.js`` needs to extend the charts from ``asset.state`` events:
    ``{"asset": id, "span_s": seconds kept (None: the whole history), "gap_s": gap rule}``,
    or None for a custom range (a fixed span of the past, never extended)."""
    if window.name not in RANGES:
        return None
    span = RANGES[window.name][1]
    return {"asset": asset.pk, "span_s": span.total_seconds() if span else None,
            "gap_s": gap_seconds(window, interval_s)}


def chart_series(user, asset, window: Window, interval_s: float | None) -> tuple[list, str]:
    """Per declared metric ``{metric, unit, t, min, max, avg}`` over ``window`` (metrics with
    no data in it are left out), and the source the aggregate read (raw or a rollup).
    Raises ``telemetry.queries.QueryError`` for a range the aggregate refuses."""
    selection = select_series(user, asset.twin.slug, asset.slug)
    result = aggregate(AggregateRequest(selection, window.start, window.end, window.bucket,
                                        FUNCTIONS))
    gap_s = gap_seconds(window, interval_s)
    by_metric = {s["metric"]: s for s in result.series}
    charts = [{"metric": m, "unit": asset.unit_of(m)} | _with_gaps(by_metric[m], gap_s)
              for m in asset.metric_names if m in by_metric and by_metric[m]["ts"]]
    return charts, result.source
