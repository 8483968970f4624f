"""Ingest ceiling: binary COPY of pre-generated rows straight into the samples table.

Rows (SKAB-shaped: 10 assets x 8 metrics, 1 s apart) are encoded to PostgreSQL's binary COPY
format before the clock starts; each COPY of ``--chunk`` rows commits (synchronous_commit on, as
in production), into the real table with its indexes ((asset, metric, ts) btree, BRIN on ts,
the id primary key). Baselines measured in the same run: the same COPY into an index-free copy
of the table (what the indexes cost) and row-by-row ``executemany`` INSERTs (what COPY buys).

Run: ``python benchmarks/ingest_ceiling.py [--rows 2000000]`` (about 40 s), on ``DATABASE_URL``'s
server or the embedded PostgreSQL (a scratch database is created and dropped). ``make bench``
runs it with every other benchmark. ``ceiling(url, rows)`` is reused by ingest_e2e.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import (  # noqa: E402
    SKAB_METRICS,
    bench_database,
    copy_binary,
    encode_samples,
    skab_like_values,
    timed,
)

ASSETS = 10


def pregenerate(rows: int, chunk: int, first_asset_id: int) -> list[bytes]:
    """Binary COPY bodies of ``chunk`` rows each (10 assets x 8 metrics per second)."""
    events = rows // len(SKAB_METRICS)
    values = skab_like_values(events).reshape(-1)
    event_index = np.repeat(np.arange(events), len(SKAB_METRICS))
    ts_us = (7.5e14 + (event_index // ASSETS) * 1e6).astype(np.int64)  # 2023-10, 1 s apart
    asset_ids = first_asset_id + (event_index % ASSETS).astype(np.int64)
    metric_index = np.tile(np.arange(len(SKAB_METRICS)), events)
    bodies = []
    for start in range(0, len(values), chunk):
        part = slice(start, start + chunk)
        bodies.append(encode_samples(ts_us[part], asset_ids[part], SKAB_METRICS,
                                     metric_index[part], values[part]))
    return bodies


def _copy_all(conn, bodies: list[bytes], table: str) -> None:
    for body in bodies:
        copy_binary(conn, body, table)
        conn.commit()


def ceiling(url: str, rows: int = 2_000_000, chunk: int = 50_000) -> dict:
    """Rows/s of binary COPY into the samples table, plus the two baselines (rows/s)."""
    import psycopg

    with psycopg.connect(url) as conn:
        first = _asset_ids(conn)
        bodies = pregenerate(rows, chunk, first)
        n = rows // len(SKAB_METRICS) * len(SKAB_METRICS)
        seconds, _ = timed(_copy_all, conn, bodies, "telemetry_telemetrysample")
        conn.execute("CREATE TABLE bench_noindex (ts timestamptz, asset_id bigint, "
                     "metric varchar(64), value double precision)")
        conn.commit()
        bare, _ = timed(_copy_all, conn, bodies, "bench_noindex")
        few = min(n, 50_000)
        insert_rows = [(r[0], r[1], r[2], r[3]) for r in conn.execute(
            "SELECT ts, asset_id, metric, value FROM bench_noindex LIMIT %s", [few])]
        conn.execute("TRUNCATE bench_noindex")
        conn.commit()
        sql = "INSERT INTO bench_noindex (ts, asset_id, metric, value) VALUES (%s, %s, %s, %s)"
        insert, _ = timed(lambda: (conn.cursor().executemany(sql, insert_rows), conn.commit()))
    return {"rows": n, "copy_rows_s": n / seconds, "copy_noindex_rows_s": n / bare,
            "insert_rows": few, "insert_rows_s": few / insert}


def _asset_ids(conn) -> int:
    conn.execute("INSERT INTO twins_twin (slug, name, description, revision, created_at, "
                 "updated_at) VALUES ('bench', 'bench', '', 1, now(), now())")
    twin = conn.execute("SELECT id FROM twins_twin WHERE slug = 'bench'").fetchone()[0]
    ids = [conn.execute(
        "INSERT INTO twins_asset (twin_id, slug, name, kind, metadata, metrics, desired, "
        "revision, created_at, updated_at) "
        "VALUES (%s, %s, %s, 'pump', '{}', '[]', '{}', 1, now(), now()) RETURNING id",
        [twin, f"pump-{i}", f"Pump {i}"]).fetchone()[0] for i in range(ASSETS)]
    conn.commit()
    return ids[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    args = parser.parse_args()
    with bench_database("ceiling") as url:
        result = ceiling(url, args.rows, args.chunk)
    print(f"ingest ceiling: binary COPY of {result['rows']:,} pre-encoded rows, "
          f"{args.chunk:,} per COPY+commit")
    print(f"  {'into telemetry_telemetrysample (3 indexes)':<46} "
          f"{result['copy_rows_s']:>12,.0f} rows/s   <- the ceiling")
    print(f"  {'baseline: same COPY, table without indexes':<46} "
          f"{result['copy_noindex_rows_s']:>12,.0f} rows/s")
    print(f"  {'baseline: executemany INSERT (no indexes)':<46} "
          f"{result['insert_rows_s']:>12,.0f} rows/s   ({result['insert_rows']:,} rows)")


if __name__ == "__main__":
    main()
