"""The SQL behind ``telemetry.queries.aggregate``, assembled from static fragments only.

Each aggregate function has one fragment per source: over raw samples ``t``; over rollup rows
``y`` merged into wider buckets (``COMBINE``); over rollup rows that already are the requested
buckets (``DIRECT``, when the bucket equals the rollup width and nothing is dirty). Only the
requested functions are computed, so a query without ``stddev`` needs no window pass and one
without ``last`` builds no arrays. User input reaches the SQL only as bound parameters: the
function names select fragments from these dicts after validation against the allow-list.

Every query returns rows ``(asset_id, metric, bucket, n, f0, f1, ...)`` ordered by series and
bucket, where ``n`` is the sample count of the bucket (0 for a gap-filled one) and ``fk`` the
k-th requested function.
"""

from __future__ import annotations

from telemetry import rollups
from telemetry.storage import SAMPLES

RAW = {
    "count": "count(*)", "sum": "sum(t.value)", "avg": "avg(t.value)",
    "min": "min(t.value)", "max": "max(t.value)", "stddev": "stddev_samp(t.value)",
    "last": "(max(ARRAY[date_part('epoch', t.ts), t.value]))[2]",
    "p50": "percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value)",
    "p95": "percentile_cont(0.95) WITHIN GROUP (ORDER BY t.value)",
}
COMBINE = {
    "count": "sum(y.n)::bigint", "sum": "sum(y.total)", "avg": "sum(y.total) / sum(y.n)",
    "min": "min(y.vmin)", "max": "max(y.vmax)",
    # Chan et al.: m2 of the union = sum(m2_i + n_i (mean_i - mean)^2); sample stddev from it.
    "stddev": "CASE WHEN sum(y.n) > 1 THEN sqrt(greatest(sum(y.m2 + y.n * "
              "power(y.total / y.n - y.gmean, 2)), 0) / (sum(y.n) - 1)) END",
    "last": "(max(ARRAY[date_part('epoch', y.last_ts), y.last_value]))[2]",
}
DIRECT = {
    "count": "y.n", "sum": "y.total", "avg": "y.total / y.n", "min": "y.vmin", "max": "y.vmax",
    "stddev": "CASE WHEN y.n > 1 THEN sqrt(greatest(y.m2, 0) / (y.n - 1)) END",
    "last": "y.last_value",
}
ROLLUP_FUNCTIONS = frozenset(DIRECT)


def _columns(fragments: dict[str, str], functions: list[str]) -> str:
    return "".join(f", {fragments[fn]} AS f{k}" for k, fn in enumerate(functions))


def raw_sql(functions: list[str], *, by_metric: bool) -> str:
    """Aggregates of raw samples per ``date_bin(%(width)s, ts, %(origin)s)`` bucket.

    Parameters: ``assets``, ``metrics`` (when ``by_metric``), ``start``, ``end``, ``width``,
    ``origin``.
    """
    metric = "AND t.metric = ANY(%(metrics)s::text[])" if by_metric else ""
    return f"""SELECT t.asset_id, t.metric, date_bin(%(width)s, t.ts, %(origin)s) AS bucket,
               count(*) AS n {_columns(RAW, functions)}
        FROM {SAMPLES} t WHERE t.asset_id = ANY(%(assets)s::bigint[]) {metric}
          AND t.ts >= %(start)s AND t.ts < %(end)s
        GROUP BY t.asset_id, t.metric, 3"""


def rollup_sql(level: str, functions: list[str], *, by_metric: bool, dirty: bool,
               direct: bool, single: bool = False) -> str:
    """Aggregates read from rollup ``level`` (see ``rollups.rollup_rows_sql`` for parameters).

    ``direct``: the level's buckets are the answer's buckets (no merge). Otherwise rows are
    merged per ``date_bin(%(width)s, bucket, %(origin)s)``; ``stddev`` adds a window pass for
    each group's mean. ``single``: one series, named by ``asset`` and ``metric``.
    """
    base = rollups.rollup_rows_sql(level, by_metric=by_metric, dirty=dirty, single=single)
    if direct:
        return (f"SELECT y.asset_id, y.metric, y.bucket, y.n {_columns(DIRECT, functions)} "
                f"FROM ({base}) y")
    source = f"SELECT b.*, date_bin(%(width)s, b.bucket, %(origin)s) AS grp FROM ({base}) b"
    if "stddev" in functions:
        source = (f"SELECT x.*, sum(x.total) OVER w / sum(x.n) OVER w AS gmean FROM ({source}) x "
                  "WINDOW w AS (PARTITION BY x.asset_id, x.metric, x.grp)")
    return (f"SELECT y.asset_id, y.metric, y.grp AS bucket, sum(y.n)::bigint AS n "
            f"{_columns(COMBINE, functions)} FROM ({source}) y "
            "GROUP BY y.asset_id, y.metric, y.grp")


def filled_sql(aggregated: str, functions: list[str]) -> tuple[str, str]:
    """(CTEs, SELECT) giving every bucket of [start, end) for every series (gaps: n = 0).

    Series are those with data plus ``%(s_asset)s``/``%(s_metric)s`` (declared ones).
    """
    ctes = (f"agg AS ({aggregated}), "
            "grid AS (SELECT generate_series(%(start)s, %(end)s - %(width)s, %(width)s) "
            "AS bucket), "
            "series AS (SELECT DISTINCT asset_id, metric FROM agg UNION "
            "SELECT * FROM unnest(%(s_asset)s::bigint[], %(s_metric)s::text[]))")
    values = "".join(f", coalesce(a.f{k}, 0)" if fn == "count" else f", a.f{k}"
                     for k, fn in enumerate(functions))
    select = (f"SELECT s.asset_id, s.metric, g.bucket, coalesce(a.n, 0) {values} "
              "FROM series s CROSS JOIN grid g LEFT JOIN agg a ON a.asset_id = s.asset_id "
              "AND a.metric = s.metric AND a.bucket = g.bucket")
    return ctes, select


def aggregate_sql(source: str, functions: list[str], *, by_metric: bool, fill: bool,
                  dirty: bool = False, direct: bool = False, single: bool = False,
                  dirty_flag: bool = False) -> str:
    """The whole statement for ``source`` (``"raw"`` or a rollup table), ordered for assembly.

    ``dirty_flag`` appends a last column, the same on every row: whether any dirty range of
    ``%(assets)s`` touches [``%(start)s``, ``%(end)s``) (``rollups.DIRTY_RANGES_SQL``), so a
    clean read learns in its own round trip whether it was exact.
    """
    ctes = [rollups.DIRTY_CTES] if dirty and source != "raw" else []
    if source == "raw":
        body = raw_sql(functions, by_metric=by_metric)
    else:
        body = rollup_sql(source, functions, by_metric=by_metric, dirty=dirty, direct=direct,
                          single=single)
    if fill:
        fill_ctes, body = filled_sql(body, functions)
        ctes.append(fill_ctes)
    head = f"WITH {', '.join(ctes)}" if ctes else ""
    if dirty_flag:
        body = f"SELECT q.*, EXISTS ({rollups.DIRTY_RANGES_SQL}) AS dirty FROM ({body}) q"
    return f"{head} {body} ORDER BY 1, 2, 3"
