"""1-minute and 1-hour rollups on plain PostgreSQL: incremental refresh and exact reads.

Decision (see also ``telemetry.storage``): ``ingest_batch`` records, in its own transaction, one
dirty range (asset, first ts, last ts) per asset per batch. ``refresh_rollups`` (Celery beat,
every ``TELEMETRY_ROLLUP_REFRESH_SECONDS``) claims dirty ranges with ``DELETE ... RETURNING``,
recomputes every touched 1-minute bucket from the raw rows and every touched 1-hour bucket from
the 1-minute rollup, and upserts them, all in one transaction under an advisory lock. Because a
bucket is recomputed whole rather than incremented, late and out-of-order data, redeliveries and
concurrent refreshes cannot make it wrong; because ranges are claimed in the transaction that
writes the buckets, a crash loses no work. A time watermark would not do: replayed telemetry
arrives with old timestamps.

Readers (``rollup_rows_sql``) partition the requested range into clean rollup buckets plus raw
rows of still-dirty minutes, so reading the rollups always gives the raw answer, refreshed or
not. On TimescaleDB the rollups are continuous aggregates; nothing is ever dirty, and the same
read path applies (with real-time aggregation above the materialization watermark).

``last`` is the value at the latest ts, ties going to the larger value:
``(max(ARRAY[epoch, value]))[2]`` compares (ts, value) pairs without collecting arrays per
bucket, identically for raw rows and rollups, so both sources agree. Bucket statistics combine
exactly (Chan, Golub & LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
sample variances"): for buckets i merged into g,
``m2_g = sum(m2_i + n_i * (mean_i - mean_g)**2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction

from telemetry.storage import (
    BUCKET_ORIGIN,
    DIRTY,
    ROLLUP_1H,
    ROLLUP_1M,
    SAMPLES,
    uses_continuous_aggregates,
)

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
ROLLUP_WIDTH = {ROLLUP_1M: MINUTE, ROLLUP_1H: HOUR}
#: pg advisory lock key held by the one refresher at a time ("opstwin" rollups).
REFRESH_LOCK_KEY = 0x6F7073_7477_0003
Span = tuple[int, datetime, datetime]  # (asset_id, lo, hi): [lo, hi) aligned to a bucket width


@dataclass
class RefreshReport:
    """What one ``refresh_rollups`` call did: dirty ranges claimed, spans and rows rewritten."""

    ranges: int = 0
    minute_rows: int = 0
    hour_rows: int = 0
    skipped: str = ""


def floor_to(ts: datetime, width: timedelta) -> datetime:
    """Start of the ``width`` bucket holding ``ts`` (buckets aligned on ``BUCKET_ORIGIN``)."""
    return BUCKET_ORIGIN + ((ts - BUCKET_ORIGIN) // width) * width


def merge_spans(ranges: list[tuple[int, datetime, datetime]], width: timedelta) -> list[Span]:
    """Disjoint, bucket-aligned spans covering every (asset, first_ts, last_ts) range.

    ``last_ts`` is inclusive, so its bucket is covered. Overlapping or touching spans of one
    asset merge, so a sample falls in at most one span (no double counting in joins).
    """
    aligned = sorted((a, floor_to(lo, width), floor_to(hi, width) + width) for a, lo, hi in ranges)
    merged: list[list] = []
    for asset, lo, hi in aligned:
        if merged and merged[-1][0] == asset and lo <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], hi)
        else:
            merged.append([asset, lo, hi])
    return [tuple(span) for span in merged]


def span_params(spans: list[Span]) -> list[list]:
    """``spans`` as three parallel arrays for ``unnest(%s::bigint[], %s::timestamptz[], ...)``."""
    return [[s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]]


SPANS = "unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS d(asset_id, lo, hi)"
ROLLUP_COLUMNS = "asset_id, metric, bucket, n, total, m2, vmin, vmax, last_value, last_ts"
_UPSERT = """
ON CONFLICT (asset_id, metric, bucket) DO UPDATE SET
    n = EXCLUDED.n, total = EXCLUDED.total, m2 = EXCLUDED.m2, vmin = EXCLUDED.vmin,
    vmax = EXCLUDED.vmax, last_value = EXCLUDED.last_value, last_ts = EXCLUDED.last_ts
"""


def raw_minutes_sql(where: str = "") -> str:
    """SELECT of rollup-shaped 1-minute rows from raw samples inside the spans ``d``.

    Parameters, in order: the three span arrays, the origin, then those of ``where`` (an extra
    static condition on ``t``, e.g. ``AND t.metric = ANY(%s)``).
    """
    return f"""
    SELECT t.asset_id, t.metric, date_bin('1 minute', t.ts, %s) AS bucket,
           count(*) AS n, sum(t.value) AS total, var_pop(t.value) * count(*) AS m2,
           min(t.value) AS vmin, max(t.value) AS vmax,
           (max(ARRAY[date_part('epoch', t.ts), t.value]))[2] AS last_value,
           max(t.ts) AS last_ts
    FROM {SPANS}
    JOIN {SAMPLES} t ON t.asset_id = d.asset_id AND t.ts >= d.lo AND t.ts < d.hi
    WHERE true {where}
    GROUP BY t.asset_id, t.metric, 3
    """


def combine_sql(source: str) -> str:
    """Merge rollup-shaped rows of ``source`` (a subquery with a ``grp`` column) per group.

    Output columns are ``ROLLUP_COLUMNS`` with ``bucket = grp``; ``m2`` combines exactly.
    """
    return f"""
    SELECT asset_id, metric, grp AS bucket, sum(n)::bigint AS n, sum(total) AS total,
           sum(m2 + n * power(total / n - gmean, 2)) AS m2, min(vmin) AS vmin,
           max(vmax) AS vmax,
           (max(ARRAY[date_part('epoch', last_ts), last_value]))[2] AS last_value,
           max(last_ts) AS last_ts
    FROM (SELECT x.*, sum(x.total) OVER w / sum(x.n) OVER w AS gmean
          FROM ({source}) x WINDOW w AS (PARTITION BY x.asset_id, x.metric, x.grp)) y
    GROUP BY asset_id, metric, grp
    """


def _claim(cursor, limit: int) -> list[tuple[int, datetime, datetime]]:
    cursor.execute(
        f"DELETE FROM {DIRTY} WHERE id IN (SELECT id FROM {DIRTY} ORDER BY id LIMIT %s) "
        "RETURNING asset_id, first_ts, last_ts",
        [limit],
    )
    return cursor.fetchall()


def _refresh_minutes(cursor, spans: list[Span]) -> int:
    cursor.execute(
        f"INSERT INTO {ROLLUP_1M} ({ROLLUP_COLUMNS}) {raw_minutes_sql()} {_UPSERT}",
        [BUCKET_ORIGIN, *span_params(spans)],
    )
    return cursor.rowcount


def _refresh_hours(cursor, spans: list[Span]) -> int:
    source = f"""
        SELECT r.*, date_bin('1 hour', r.bucket, %s) AS grp FROM {SPANS}
        JOIN {ROLLUP_1M} r ON r.asset_id = d.asset_id AND r.bucket >= d.lo AND r.bucket < d.hi
    """
    cursor.execute(
        f"INSERT INTO {ROLLUP_1H} ({ROLLUP_COLUMNS}) {combine_sql(source)} {_UPSERT}",
        [BUCKET_ORIGIN, *span_params(spans)],
    )
    return cursor.rowcount


def refresh_once(limit: int = 20_000) -> RefreshReport:
    """Claim up to ``limit`` dirty ranges and rewrite their 1-minute and 1-hour buckets.

    One transaction under ``pg_try_advisory_xact_lock``: a concurrent caller returns at once
    with ``skipped="locked"`` instead of waiting. No-op (``skipped="timescaledb"``) when the
    rollups are continuous aggregates.
    """
    if uses_continuous_aggregates():
        return RefreshReport(skipped="timescaledb")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [REFRESH_LOCK_KEY])
        if not cursor.fetchone()[0]:
            return RefreshReport(skipped="locked")
        ranges = _claim(cursor, limit)
        if not ranges:
            return RefreshReport()
        minutes = _refresh_minutes(cursor, merge_spans(ranges, MINUTE))
        hours = _refresh_hours(cursor, merge_spans(ranges, HOUR))
    return RefreshReport(ranges=len(ranges), minute_rows=minutes, hour_rows=hours)


def refresh_rollups(*, limit: int = 20_000, max_rounds: int = 50) -> RefreshReport:
    """Fold every dirty range into the rollups (``refresh_once`` until none is left).

    Returns the totals. Bounded by ``max_rounds`` so a flood of ingest cannot pin the caller;
    what is left waits for the next call (readers stay exact meanwhile).
    """
    total = RefreshReport()
    for _ in range(max_rounds):
        report = refresh_once(limit)
        total.ranges += report.ranges
        total.minute_rows += report.minute_rows
        total.hour_rows += report.hour_rows
        total.skipped = report.skipped
        if report.skipped or report.ranges < limit:
            break
    return total


# --- exact reads ---------------------------------------------------------------------------------
DIRTY_CTES = """
    dm AS MATERIALIZED (SELECT * FROM unnest(%(dm_asset)s::bigint[], %(dm_lo)s::timestamptz[],
                                            %(dm_hi)s::timestamptz[]) AS x(asset_id, lo, hi)),
    dh AS MATERIALIZED (SELECT * FROM unnest(%(dh_asset)s::bigint[], %(dh_lo)s::timestamptz[],
                                            %(dh_hi)s::timestamptz[]) AS x(asset_id, lo, hi))
"""


def _inside(spans: str) -> str:
    return (f"SELECT 1 FROM {spans} WHERE {spans}.asset_id = r.asset_id "
            f"AND r.bucket >= {spans}.lo AND r.bucket < {spans}.hi")


def rollup_rows_sql(level: str, *, by_metric: bool, dirty: bool, single: bool = False) -> str:
    """SELECT of rollup-shaped rows that partition the samples in [start, end) exactly.

    ``level`` is ``storage.ROLLUP_1M`` or ``ROLLUP_1H``. Without ``dirty`` spans that is just the
    level's buckets. With them (the query must then start ``WITH {DIRTY_CTES}``): clean buckets of
    the level, plus (hour level) clean minutes of dirty hours, plus raw rows of dirty minutes
    aggregated per minute. Named parameters: ``assets`` (bigint[]), ``metrics`` (text[], when
    ``by_metric``), ``start``/``end`` (aligned to ``level``), ``origin`` and, with ``dirty``,
    those of ``dirty_span_params``. ``single`` (clean reads of one series): ``asset`` and
    ``metric`` name it by equality instead, so the primary key returns its buckets in order
    (PostgreSQL 15 sorts the rows of an ``= ANY(array)`` scan again). Only static text is
    assembled here.
    """
    r_metric = "AND r.metric = ANY(%(metrics)s::text[])" if by_metric else ""
    t_metric = "AND t.metric = ANY(%(metrics)s::text[])" if by_metric else ""
    where = f"r.asset_id = ANY(%(assets)s::bigint[]) {r_metric} AND r.bucket >= %(start)s " \
            "AND r.bucket < %(end)s"
    if not dirty:
        if single:
            where = "r.asset_id = %(asset)s::bigint AND r.metric = %(metric)s::text " \
                    "AND r.bucket >= %(start)s AND r.bucket < %(end)s"
        return f"SELECT {ROLLUP_COLUMNS} FROM {level} r WHERE {where}"
    parts = []
    minutes = f"SELECT {ROLLUP_COLUMNS} FROM {ROLLUP_1M} r WHERE {where} " \
              f"AND NOT EXISTS ({_inside('dm')})"
    if level == ROLLUP_1H:
        parts.append(f"SELECT {ROLLUP_COLUMNS} FROM {ROLLUP_1H} r WHERE {where} "
                     f"AND NOT EXISTS ({_inside('dh')})")
        minutes += f" AND EXISTS ({_inside('dh')})"
    parts.append(minutes)
    parts.append(f"""SELECT t.asset_id, t.metric, date_bin('1 minute', t.ts, %(origin)s),
               count(*), sum(t.value), var_pop(t.value) * count(*), min(t.value), max(t.value),
               (max(ARRAY[date_part('epoch', t.ts), t.value]))[2], max(t.ts)
        FROM dm JOIN {SAMPLES} t ON t.asset_id = dm.asset_id AND t.ts >= dm.lo AND t.ts < dm.hi
        WHERE t.ts >= %(start)s AND t.ts < %(end)s {t_metric}
        GROUP BY t.asset_id, t.metric, 3""")
    return "\nUNION ALL\n".join(parts)


#: Dirty ranges of ``%(assets)s`` that touch [``%(start)s``, ``%(end)s``), for ``dirty_params``.
DIRTY_RANGES_SQL = f"""SELECT asset_id, first_ts, last_ts FROM {DIRTY}
    WHERE asset_id = ANY(%(assets)s::bigint[]) AND first_ts < %(end)s AND last_ts >= %(start)s"""


def dirty_params(ranges: list[tuple[int, datetime, datetime]]) -> dict:
    """Named parameters ``dm_*``/``dh_*`` (dirty minutes and hours) for ``DIRTY_CTES``.

    ``ranges`` are rows of ``DIRTY_RANGES_SQL``; empty dict when there are none.
    """
    if not ranges:
        return {}
    params = {}
    for prefix, width in (("dm", MINUTE), ("dh", HOUR)):
        assets, los, his = span_params(merge_spans(ranges, width))
        params |= {f"{prefix}_asset": assets, f"{prefix}_lo": los, f"{prefix}_hi": his}
    return params


def dirty_span_params(cursor, asset_ids: list[int], start: datetime, end: datetime) -> dict:
    """``dirty_params`` of the dirty ranges in [start, end), read with ``cursor``.

    Empty dict when nothing in that range waits for a refresh (always, on TimescaleDB).
    """
    cursor.execute(DIRTY_RANGES_SQL, {"assets": asset_ids, "start": start, "end": end})
    return dirty_params(cursor.fetchall())
