"""Reading telemetry back: raw rows (keyset pages), bucketed aggregates, latest values.

Every read starts from ``select_series``, which scopes the twin by
``twins.scoping.visible_twins(user)``: a twin or asset outside the user's scope does not exist
for them (``ObjectDoesNotExist``, answered 404). Requests the service will not run raise
``QueryError`` (answered 400) with a reason a client can act on. User input never becomes SQL
text: bucket widths come from ``BUCKETS`` and are bound as ``interval`` parameters, and the
only SQL variants are static fragments chosen by flags.

Aggregates are computed over whole buckets ``date_bin(width, ts, BUCKET_ORIGIN)``: ``start`` is
rounded down and ``end`` up to bucket boundaries, so raw and rollup sources agree exactly.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import operator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.conf import settings

from telemetry import aggregate_sql, rollups
from telemetry.replica import query_connection
from telemetry.storage import BUCKET_ORIGIN, ROLLUP_1H, ROLLUP_1M, SAMPLES
from twins.models import Asset, Twin
from twins.scoping import visible_twins

#: Allowed bucket widths (the ``bucket`` parameter) and the intervals they bind to.
BUCKETS: dict[str, timedelta] = {
    "1s": timedelta(seconds=1), "5s": timedelta(seconds=5), "10s": timedelta(seconds=10),
    "15s": timedelta(seconds=15), "30s": timedelta(seconds=30), "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5), "10m": timedelta(minutes=10), "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30), "1h": timedelta(hours=1), "2h": timedelta(hours=2),
    "3h": timedelta(hours=3), "6h": timedelta(hours=6), "12h": timedelta(hours=12),
    "1d": timedelta(days=1), "7d": timedelta(days=7),
}
FUNCTIONS = ("avg", "min", "max", "count", "sum", "stddev", "last", "p50", "p95")
FILLS = ("none", "null", "previous")
SOURCES = ("auto", "raw", "rollup")


class QueryError(ValueError):
    """The request is well-formed but cannot be served as asked; ``str(exc)`` says why."""


@dataclass(frozen=True)
class Selection:
    """Which series a request reads: assets of one visible twin, optionally some metrics."""

    twin: Twin
    assets: list[Asset]
    metrics: list[str] | None = None

    @property
    def asset_ids(self) -> list[int]:
        return [a.pk for a in self.assets]

    def series_estimate(self) -> int:
        """Upper bound on the number of (asset, metric) series (64 per undeclared asset)."""
        total = 0
        for asset in self.assets:
            declared = asset.metric_names
            if self.metrics is not None:
                total += len(set(self.metrics) & set(declared)) if declared else len(self.metrics)
            else:
                total += len(declared) or 64
        return total


def select_series(user, twin: str, asset: str | None = None,
                  metrics: list[str] | None = None) -> Selection:
    """Resolve slugs within the twins ``user`` may see.

    Raises ``Twin.DoesNotExist``/``Asset.DoesNotExist`` for anything out of scope, and
    ``QueryError`` when a requested metric is declared on none of the selected assets (every
    one of which declares its metrics).
    """
    found = visible_twins(user).get(slug=twin)
    assets = list(found.assets.all()) if asset is None else [found.assets.get(slug=asset)]
    if metrics:
        metrics = sorted(set(metrics))
        if assets and all(a.metric_names for a in assets):
            declared = {m for a in assets for m in a.metric_names}
            unknown = [m for m in metrics if m not in declared]
            if unknown:
                raise QueryError(f"metric(s) not declared on the selected assets: "
                                 f"{', '.join(unknown)}")
    return Selection(found, assets, metrics or None)


def _check_range(start: datetime, end: datetime, max_days: int, what: str) -> None:
    if end < start:  # [start, end) is half-open: start == end is an empty range, not an error
        raise QueryError("end must not be before start")
    if end - start > timedelta(days=max_days):
        raise QueryError(f"{what} spans at most {max_days} days; got {end - start}")


# --- raw rows, keyset pagination --------------------------------------------------------------
@dataclass
class Page:
    """One page of raw samples (ordered by asset, metric, ts, id) and the cursor to the next."""

    rows: list[dict]
    next_cursor: str | None


def _query_key(selection: Selection, start: datetime, end: datetime) -> str:
    raw = json.dumps([selection.asset_ids, selection.metrics, start.isoformat(), end.isoformat()])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def encode_cursor(key: str, last: tuple) -> str:
    """Opaque cursor: where the previous page ended plus the query it belongs to."""
    asset_id, metric, ts, row_id = last
    doc = {"q": key, "a": asset_id, "m": metric, "t": ts.isoformat(), "i": row_id}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key: str) -> tuple:
    """(asset_id, metric, ts, id) from ``encode_cursor``; ``QueryError`` if foreign or broken."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        last = (int(doc["a"]), str(doc["m"]), datetime.fromisoformat(doc["t"]), int(doc["i"]))
        belongs = doc["q"] == key
    except (ValueError, TypeError, KeyError) as exc:
        raise QueryError("cursor is not valid") from exc
    if not belongs:
        raise QueryError("cursor belongs to a different query (twin, asset, metric or range)")
    return last


def query_samples(selection: Selection, start: datetime, end: datetime, *, limit: int,
                  cursor: str | None = None) -> Page:
    """Raw samples with start <= ts < end, ``limit`` per page (at most TELEMETRY_QUERY_MAX_LIMIT).

    Keyset pagination on (asset_id, metric, ts, id), which the (asset, metric, ts) index serves
    directly, so page N costs what page 1 costs. Raises ``QueryError`` for a range over
    ``TELEMETRY_QUERY_MAX_RANGE_DAYS``, a limit over the maximum, or a bad cursor.
    """
    _check_range(start, end, settings.TELEMETRY_QUERY_MAX_RANGE_DAYS, "a raw query")
    if not 1 <= limit <= settings.TELEMETRY_QUERY_MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {settings.TELEMETRY_QUERY_MAX_LIMIT}")
    key = _query_key(selection, start, end)
    params = {"assets": selection.asset_ids, "metrics": selection.metrics, "start": start,
              "end": end, "limit": limit + 1}
    after = ""
    if cursor:
        params["a"], params["m"], params["t"], params["i"] = decode_cursor(cursor, key)
        after = ("AND (s.asset_id, s.metric, s.ts, s.id) > "
                 "(%(a)s::bigint, %(m)s::text, %(t)s::timestamptz, %(i)s::bigint)")
    metric = "AND s.metric = ANY(%(metrics)s::text[])" if selection.metrics else ""
    rows = _fetch(f"""SELECT s.asset_id, s.metric, s.ts, s.id, s.value FROM {SAMPLES} s
        WHERE s.asset_id = ANY(%(assets)s::bigint[]) {metric} AND s.ts >= %(start)s
          AND s.ts < %(end)s {after} ORDER BY s.asset_id, s.metric, s.ts, s.id
        LIMIT %(limit)s""", params)
    more = len(rows) > limit
    rows = rows[:limit]
    slugs = {a.pk: a.slug for a in selection.assets}
    out = [{"asset": slugs[r[0]], "metric": r[1], "ts": r[2], "value": r[4]} for r in rows]
    return Page(out, encode_cursor(key, rows[-1][:4]) if more else None)


# --- aggregates ---------------------------------------------------------------------------------
@dataclass
class AggregateRequest:
    """A bucketed aggregate: ``bucket`` in ``BUCKETS``, ``functions`` from ``FUNCTIONS``."""

    selection: Selection
    start: datetime
    end: datetime
    bucket: str
    functions: list[str]
    fill: str = "none"
    source: str = "auto"


@dataclass
class AggregateResult:
    """Series of bucketed values, one per (asset, metric), columnar.

    ``series[k]["ts"]`` are bucket starts; ``series[k]["values"][fn]`` the matching values
    (``None`` where a bucket is empty or, for stddev, holds one sample). ``source`` is
    ``raw``, ``rollup_1m`` or ``rollup_1h``.
    """

    source: str
    start: datetime
    end: datetime
    bucket: str
    functions: list[str]
    series: list[dict] = field(default_factory=list)


def _ceil_to(ts: datetime, width: timedelta) -> datetime:
    floor = rollups.floor_to(ts, width)
    return floor if floor == ts else floor + width


def _choose_source(req: AggregateRequest, width: timedelta, span: timedelta) -> str:
    rollup_ok = width % rollups.MINUTE == timedelta(0) \
        and set(req.functions) <= aggregate_sql.ROLLUP_FUNCTIONS
    level = ROLLUP_1H if width % rollups.HOUR == timedelta(0) else ROLLUP_1M
    if req.source == "rollup":
        if not rollup_ok:
            raise QueryError("source=rollup needs a bucket of whole minutes and no percentiles")
        return level
    if req.source == "auto" and rollup_ok \
            and span >= timedelta(seconds=settings.TELEMETRY_ROLLUP_AFTER_SECONDS):
        return level
    days = settings.TELEMETRY_QUERY_MAX_RANGE_DAYS
    if span > timedelta(days=days):
        raise QueryError(f"this aggregate must read raw samples (percentiles, sub-minute buckets "
                         f"or source=raw), which is limited to {days} days; got {span}")
    return "raw"


def _check_size(req: AggregateRequest, width: timedelta, span: timedelta) -> None:
    points = (span // width) * req.selection.series_estimate()
    limit = settings.TELEMETRY_AGGREGATE_MAX_POINTS
    if points > limit:
        raise QueryError(f"the answer would hold up to {points} points (series x buckets); the "
                         f"limit is {limit}: use a wider bucket, a shorter range or fewer series")


def _requested_series(selection: Selection) -> tuple[list[int], list[str]]:
    pairs = [(a.pk, m) for a in selection.assets for m in a.metric_names
             if selection.metrics is None or m in selection.metrics]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _locf(values: dict[str, list], counts: list[int]) -> None:
    """Last observation carried forward into empty buckets (every function but ``count``)."""
    for name, column in values.items():
        if name == "count":
            continue
        for i in range(1, len(column)):
            if counts[i] == 0:
                column[i] = column[i - 1]


def _assemble(rows: list[tuple], req: AggregateRequest) -> list[dict]:
    """Rows (asset_id, metric, bucket, n, f0, ...) ordered by series -> columnar series.

    Columns after the requested functions' (``_read_rollup``'s flag) are ignored.
    """
    assets = {a.pk: a for a in req.selection.assets}
    series = []
    for (asset_id, metric), group in itertools.groupby(rows, key=_series_key):
        columns = list(zip(*group, strict=True))
        values = {fn: list(columns[4 + k]) for k, fn in enumerate(req.functions)}
        if req.fill == "previous":
            _locf(values, columns[3])
        asset = assets[asset_id]
        series.append({"asset": asset.slug, "metric": metric, "unit": asset.unit_of(metric),
                       "ts": list(columns[2]), "values": values})
    return series


_series_key = operator.itemgetter(0, 1)


def _fetch(sql: str, params: dict, *, jit_off: bool = True) -> list[tuple]:
    """Run a read query with binary results on Django's connection (the replica inside
    ``telemetry.replica.from_replica()`` when one is configured), JIT off (``jit_off``).

    Binary results use psycopg's C loaders: Django's own timestamptz loader (Python, per
    value) made a 57,600-bucket answer ~5x slower. JIT compilation cost ~0.6 s of a 2 s
    month-long raw aggregate and never paid back; rollup reads plan far below
    ``jit_above_cost`` and skip the two extra round trips. (psycopg's pipeline mode would save
    those, but reads a 1,440-row answer ~2 ms slower.) Bypasses Django's execute wrappers.
    """
    connection = query_connection()
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        if jit_off:
            cursor.execute("SET jit = off")
        try:
            cursor.execute(sql, params, prepare=False, binary=True)
            return cursor.fetchall()
        finally:
            if jit_off:
                cursor.execute("RESET jit")


def _read_rollup(req: AggregateRequest, source: str, width: timedelta, params: dict):
    """Rows from rollup ``source``, exact whatever still waits for a refresh.

    Optimistic, one round trip when nothing is dirty: the clean-rollup answer carries a
    trailing flag saying whether any dirty range touches the request (same snapshot). Only when
    one does, or the answer is empty, are the dirty ranges read and the answer read again,
    merging raw rows of the dirty minutes (``rollups.rollup_rows_sql``).
    """
    flags = {"by_metric": req.selection.metrics is not None, "fill": req.fill != "none"}
    single = len(params["assets"]) == 1 and len(params["metrics"] or ()) == 1
    if single:
        params = params | {"asset": params["assets"][0], "metric": params["metrics"][0]}
    clean = aggregate_sql.aggregate_sql(source, req.functions, **flags, single=single,
                                        direct=width == rollups.ROLLUP_WIDTH[source],
                                        dirty_flag=True)
    rows = _fetch(clean, params, jit_off=False)
    if rows and not rows[0][-1]:
        return rows
    ranges = _fetch(rollups.DIRTY_RANGES_SQL, params, jit_off=False)
    if not ranges:  # refreshed meanwhile (or an empty answer): the clean read is exact now
        return _fetch(clean, params, jit_off=False)
    dirty = aggregate_sql.aggregate_sql(source, req.functions, **flags, dirty=True)
    return _fetch(dirty, params | rollups.dirty_params(ranges), jit_off=False)


def aggregate(req: AggregateRequest) -> AggregateResult:
    """Bucketed aggregates of the selected series.

    Source: ``raw`` samples, or the 1-minute/1-hour rollups when the bucket is whole minutes
    (hours), no percentile is asked and the range is at least ``TELEMETRY_ROLLUP_AFTER_SECONDS``
    (``source=auto``), or when ``source=rollup``. Raises ``QueryError`` when the range exceeds
    ``TELEMETRY_AGGREGATE_MAX_RANGE_DAYS`` (raw: ``TELEMETRY_QUERY_MAX_RANGE_DAYS``), when the
    answer could exceed ``TELEMETRY_AGGREGATE_MAX_POINTS``, or for an impossible source.
    """
    if req.bucket not in BUCKETS or not req.functions \
            or not set(req.functions) <= set(FUNCTIONS) or req.fill not in FILLS \
            or req.source not in SOURCES:
        raise QueryError("bucket, functions, fill or source is not one of the allowed values")
    width = BUCKETS[req.bucket]
    start, end = rollups.floor_to(req.start, width), _ceil_to(req.end, width)
    _check_range(start, end, settings.TELEMETRY_AGGREGATE_MAX_RANGE_DAYS, "an aggregate")
    span = end - start
    source = _choose_source(req, width, span)
    _check_size(req, width, span)
    params = {"assets": req.selection.asset_ids, "metrics": req.selection.metrics,
              "start": start, "end": end, "width": width, "origin": BUCKET_ORIGIN}
    s_asset, s_metric = _requested_series(req.selection)
    params |= {"s_asset": s_asset, "s_metric": s_metric}
    if source == "raw":
        rows = _fetch(aggregate_sql.aggregate_sql(
            source, req.functions, by_metric=req.selection.metrics is not None,
            fill=req.fill != "none"), params)
    else:
        rows = _read_rollup(req, source, width, params)
    label = {ROLLUP_1M: "rollup_1m", ROLLUP_1H: "rollup_1h"}.get(source, "raw")
    return AggregateResult(label, start, end, req.bucket, req.functions, _assemble(rows, req))


# --- latest ---------------------------------------------------------------------------------------
def _metrics_present(cursor, asset_id: int) -> list[str]:
    # Loose index scan over (asset_id, metric, ts): one index probe per distinct metric.
    cursor.execute(f"""
        WITH RECURSIVE m AS (
            (SELECT metric FROM {SAMPLES} WHERE asset_id = %(a)s ORDER BY metric LIMIT 1)
            UNION ALL
            SELECT (SELECT s.metric FROM {SAMPLES} s WHERE s.asset_id = %(a)s
                    AND s.metric > m.metric ORDER BY s.metric LIMIT 1)
            FROM m WHERE m.metric IS NOT NULL)
        SELECT metric FROM m WHERE metric IS NOT NULL""", {"a": asset_id})
    return [r[0] for r in cursor.fetchall()]


def latest(asset: Asset) -> list[dict]:
    """The most recent sample of each metric of ``asset``: ``[{metric, unit, ts, value}]``.

    Metrics are the declared ones (in declaration order; ``ts``/``value`` null when never
    seen), or those present in the data when the asset declares none. One index probe each.
    """
    with query_connection().cursor() as c:
        names = asset.metric_names or _metrics_present(c, asset.pk)
        c.execute(f"""
            SELECT m.metric, s.ts, s.value FROM unnest(%(names)s::text[]) WITH ORDINALITY
                AS m(metric, position)
            LEFT JOIN LATERAL (SELECT ts, value FROM {SAMPLES} WHERE asset_id = %(a)s
                               AND metric = m.metric ORDER BY ts DESC, id DESC LIMIT 1) s ON true
            ORDER BY m.position""", {"names": names, "a": asset.pk})
        rows = c.fetchall()
    return [{"metric": m, "unit": asset.unit_of(m), "ts": ts,
             "value": None if value is None or math.isnan(value) else value}
            for m, ts, value in rows]
