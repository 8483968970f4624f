"""Where telemetry lives: the samples table, the rollups, and the one switch between engines.

``TIMESCALEDB=1`` (read by migration ``0004_telemetry_storage`` when it runs) builds:

- ``telemetry_telemetrysample`` as a hypertable partitioned on ``ts`` (1-day chunks), without its
  ``id`` primary-key constraint: TimescaleDB requires every unique index to include the time
  column, and a unique index would also force decompression on every insert into a compressed
  chunk. Ids stay unique through their sequence. Compression segments by (asset_id, metric),
  ordered by ts DESC, after ``TELEMETRY_COMPRESS_AFTER_DAYS``; a retention policy drops chunks
  older than ``TELEMETRY_RETENTION_DAYS`` (event time).
- ``telemetry_rollup_1m`` and ``telemetry_rollup_1h`` as continuous aggregates (real-time:
  ``materialized_only = false``) refreshed by TimescaleDB policies (1-minute rollup every
  minute, 1-hour rollup every 10 minutes). Rows newer than the materialization watermark are
  aggregated at query time; rows arriving late, below it, show after the next refresh. The
  refresh window starts 7 days inside the retention horizon so a refresh never erases buckets
  of dropped chunks.

Otherwise (plain PostgreSQL) the samples table keeps its btree (asset, metric, ts) and BRIN (ts)
indexes, and the rollups are ordinary tables kept current incrementally by
``telemetry.rollups.refresh_rollups`` from the dirty ranges ``ingest_batch`` records
(``telemetry_rollup_dirty``); queries merge still-dirty buckets from raw rows, so they are exact.

On both engines the samples and event envelopes carry no database FK constraint to assets
(migration 0004): a deferred per-row check at commit capped binary COPY at ~0.1 M rows/s.
``ingest_batch`` resolves every asset before writing; Django still cascades an asset's deletion.

Both engines expose the same rollup columns, so one query path serves both:
(asset_id bigint, metric varchar, bucket timestamptz, n bigint [samples], total float8 [sum of
values], m2 float8 [sum of squared deviations from the bucket mean], vmin, vmax, last_value
float8, last_ts timestamptz). Buckets are aligned on ``BUCKET_ORIGIN`` (TimescaleDB's default).
Rollup tables carry no foreign key to assets so Django's test flush (TRUNCATE) never trips on
them. Migration 0004 runs ``create_storage``: change this DDL only together with a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

SAMPLES = "telemetry_telemetrysample"
ROLLUP_1M = "telemetry_rollup_1m"
ROLLUP_1H = "telemetry_rollup_1h"
DIRTY = "telemetry_rollup_dirty"
#: A Monday at midnight UTC: TimescaleDB's time_bucket origin, so 7-day buckets start on Mondays.
BUCKET_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
ROLLUP_LEVELS: dict[str, timedelta] = {ROLLUP_1M: timedelta(minutes=1),
                                       ROLLUP_1H: timedelta(hours=1)}

_ROLLUP_COLUMNS = """
    asset_id bigint NOT NULL,
    metric varchar(64) NOT NULL,
    bucket timestamptz NOT NULL,
    n bigint NOT NULL,
    total double precision NOT NULL,
    m2 double precision NOT NULL,
    vmin double precision NOT NULL,
    vmax double precision NOT NULL,
    last_value double precision NOT NULL,
    last_ts timestamptz NOT NULL,
    PRIMARY KEY (asset_id, metric, bucket)
"""

DIRTY_DDL = f"""
CREATE TABLE {DIRTY} (
    id bigserial PRIMARY KEY,
    asset_id bigint NOT NULL,
    first_ts timestamptz NOT NULL,
    last_ts timestamptz NOT NULL
);
CREATE INDEX {DIRTY}_asset ON {DIRTY} (asset_id, first_ts);
"""

PLAIN_DDL = [f"CREATE TABLE {name} ({_ROLLUP_COLUMNS})" for name in ROLLUP_LEVELS]


#: Covering keys (migration 0008, plain PostgreSQL): every rollup column rides in the primary
#: key's leaf pages, so reading a series' buckets is an index-only scan in bucket order. Rollup
#: rows are written a series-minute at a time across all series, so without it one asset-metric
#: over 24 h touched ~1,400 heap pages (1,440 buckets), each a random read. The upsert's
#: ``ON CONFLICT (asset_id, metric, bucket)`` still finds the key (INCLUDE columns are not part
#: of it).
COVERING_KEY_DDL = [
    f"""ALTER TABLE {name} DROP CONSTRAINT {name}_pkey,
        ADD CONSTRAINT {name}_pkey PRIMARY KEY (asset_id, metric, bucket)
        INCLUDE (n, total, m2, vmin, vmax, last_value, last_ts)"""
    for name in ROLLUP_LEVELS
]
PLAIN_KEY_DDL = [
    f"""ALTER TABLE {name} DROP CONSTRAINT {name}_pkey,
        ADD CONSTRAINT {name}_pkey PRIMARY KEY (asset_id, metric, bucket)"""
    for name in ROLLUP_LEVELS
]


def _cagg_sql(name: str, width: str) -> str:
    return f"""
CREATE MATERIALIZED VIEW {name}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT asset_id, metric, time_bucket(INTERVAL '{width}', ts) AS bucket,
       count(*) AS n, sum(value) AS total, var_pop(value) * count(*) AS m2,
       min(value) AS vmin, max(value) AS vmax, last(value, ts) AS last_value, max(ts) AS last_ts
FROM {SAMPLES}
GROUP BY asset_id, metric, time_bucket(INTERVAL '{width}', ts)
WITH NO DATA
"""


TIMESCALE_DDL = [
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    f"ALTER TABLE {SAMPLES} DROP CONSTRAINT IF EXISTS {SAMPLES}_pkey",
    f"""SELECT create_hypertable('{SAMPLES}', 'ts', chunk_time_interval => INTERVAL '1 day',
                                 create_default_indexes => false, migrate_data => true)""",
    f"""ALTER TABLE {SAMPLES} SET (timescaledb.compress,
                                  timescaledb.compress_segmentby = 'asset_id, metric',
                                  timescaledb.compress_orderby = 'ts DESC')""",
    _cagg_sql(ROLLUP_1M, "1 minute"),
    _cagg_sql(ROLLUP_1H, "1 hour"),
]


def _policy_statements() -> list[tuple[str, list]]:
    retention = settings.TELEMETRY_RETENTION_DAYS
    refresh_from = max(retention - 7, 1)
    return [
        (f"SELECT remove_compression_policy('{SAMPLES}', if_exists => true)", []),
        (f"SELECT add_compression_policy('{SAMPLES}', compress_after => make_interval(days => %s))",
         [settings.TELEMETRY_COMPRESS_AFTER_DAYS]),
        (f"SELECT remove_retention_policy('{SAMPLES}', if_exists => true)", []),
        (f"SELECT add_retention_policy('{SAMPLES}', drop_after => make_interval(days => %s))",
         [retention]),
        *[(f"SELECT remove_continuous_aggregate_policy('{name}', if_exists => true)", [])
          for name in ROLLUP_LEVELS],
        (f"""SELECT add_continuous_aggregate_policy('{ROLLUP_1M}',
                start_offset => make_interval(days => %s), end_offset => INTERVAL '1 minute',
                schedule_interval => INTERVAL '1 minute')""", [refresh_from]),
        (f"""SELECT add_continuous_aggregate_policy('{ROLLUP_1H}',
                start_offset => make_interval(days => %s), end_offset => INTERVAL '1 hour',
                schedule_interval => INTERVAL '10 minutes')""", [refresh_from]),
    ]


def apply_timescale_policies(cursor) -> None:
    """(Re)install compression, retention and refresh policies from the current settings.

    Idempotent: each policy is removed, then added. Run by the migration and by
    ``manage.py telemetry_storage --apply-policies`` after changing the settings.
    """
    for sql, params in _policy_statements():
        cursor.execute(sql, params)


def _require_extension(cursor) -> None:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if cursor.fetchone() is None:
        raise ImproperlyConfigured(
            "TIMESCALEDB=1 but this PostgreSQL server has no timescaledb extension; "
            "install it or set TIMESCALEDB=0 before migrating")


def create_storage(cursor, *, timescale: bool) -> None:
    """Build the rollups (and, on TimescaleDB, the hypertable and its policies).

    ``cursor`` is a DB-API cursor in the migration's transaction. Raises
    ``ImproperlyConfigured`` when ``timescale`` is set but the extension is missing.
    """
    cursor.execute(DIRTY_DDL)
    if not timescale:
        for sql in PLAIN_DDL:
            cursor.execute(sql)
        return
    _require_extension(cursor)
    for sql in TIMESCALE_DDL:
        cursor.execute(sql)
    apply_timescale_policies(cursor)


def drop_storage(cursor) -> None:
    """Undo ``create_storage``'s rollups (the hypertable itself stays a hypertable)."""
    for name in ROLLUP_LEVELS:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [name])
        row = cursor.fetchone()
        if row is not None:
            kind = "MATERIALIZED VIEW" if row[0] in ("v", "m") else "TABLE"
            cursor.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
    cursor.execute(f"DROP TABLE IF EXISTS {DIRTY}")


@cache
def uses_continuous_aggregates() -> bool:
    """True when the rollups in this database are TimescaleDB continuous aggregates.

    Read from the catalogue (not the setting), so code follows what the migration built.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [ROLLUP_1M])
        row = cursor.fetchone()
    return row is not None and row[0] in ("v", "m")


def mark_dirty(cursor, ranges: dict[int, list]) -> None:
    """Record that samples of each asset in [first_ts, last_ts] changed (plain PostgreSQL).

    ``ranges`` maps asset id to ``[first_ts, last_ts]`` (aware datetimes). Runs in the caller's
    transaction, so the rollups learn of exactly the rows that commit. No-op on TimescaleDB,
    whose continuous aggregates track invalidations themselves.
    """
    if not ranges or uses_continuous_aggregates():
        return
    ids = list(ranges)
    cursor.execute(
        f"INSERT INTO {DIRTY} (asset_id, first_ts, last_ts) "
        "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[])",
        [ids, [ranges[i][0] for i in ids], [ranges[i][1] for i in ids]],
    )
