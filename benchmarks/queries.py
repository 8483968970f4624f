"""Time-series queries on a 10-million-row samples table: raw samples versus rollups.

Data: 10 assets x 8 SKAB metrics, one event every 20 s per asset for 30 days (10,368,000 rows),
loaded with binary COPY into a scratch database and VACUUMed (as autovacuum would); the
1-minute and 1-hour rollups are built by ``telemetry.rollups.refresh_rollups`` from one dirty
range per asset (timed).
Queries run through ``telemetry.queries.aggregate`` (the SQL and result assembly behind
``GET /telemetry/aggregate``, without HTTP and JSON rendering):

1. one asset-metric, 24 h in 1-minute buckets (avg, min, max): random days, p50/p95 over
   ``--repeats`` runs, from the rollups (what ``source=auto`` picks) and, as the baseline
   measured in the same run, from raw samples, and their ratio. Target: p50 <= 3 ms (TSBS
   reports ~3 ms for this shape on TimescaleDB).
1b. one asset-metric at every range from 10 minutes to 30 days, ``source=rollup`` against
   ``source=raw``: the rollup path must never be slower.
2. all assets, 1-hour buckets over the month (avg, min, max, count): every metric (80 series)
   and one metric (10 series); raw (baseline, target < 2 s) and rollups (target < 100 ms).

Run: ``python benchmarks/queries.py [--repeats 30]`` (a scratch database on ``DATABASE_URL``'s
server or the embedded PostgreSQL is created and dropped; about 3 minutes on 2 cores), or with
``--database URL`` to load the month into that database once and query it on later runs.
``make bench`` runs it with every other benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import (  # noqa: E402
    PG_EPOCH,
    REPO,
    SKAB_METRICS,
    bench_database,
    copy_binary,
    encode_samples,
    make_assets,
    setup_django,
    skab_like_values,
    timed,
)

ASSETS, DAYS, STEP_S = 10, 30, 20
START_US = 756_000_000_000_000  # 2023-12-15 UTC, in microseconds since 2000-01-01


def load(url: str, asset_ids: list[int], chunk_events: int = 150_000) -> tuple[int, float]:
    """COPY the whole month; returns (rows, seconds)."""
    import psycopg

    steps = DAYS * 86400 // STEP_S
    events = steps * len(asset_ids)
    rows, seconds = 0, 0.0
    with psycopg.connect(url) as conn:
        for first in range(0, events, chunk_events):
            index = np.arange(first, min(first + chunk_events, events))
            n = len(index)
            ts = START_US + (index // len(asset_ids)) * STEP_S * 1_000_000
            assets = np.asarray(asset_ids, dtype=np.int64)[index % len(asset_ids)]
            values = skab_like_values(n, seed=first).reshape(-1)
            body = encode_samples(np.repeat(ts, 8), np.repeat(assets, 8), SKAB_METRICS,
                                  np.tile(np.arange(8), n), values)
            took, _ = timed(lambda b=body: (copy_binary(conn, b), conn.commit()))
            rows, seconds = rows + n * 8, seconds + took
    # What autovacuum would have done to a month of data: hint bits, visibility map, stats.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) telemetry_telemetrysample")
    return rows, seconds


def build_rollups(url: str, asset_ids: list[int]) -> tuple[float, object]:
    """Mark the month dirty for every asset and fold it into the rollups (timed)."""
    import psycopg
    from django.db import connection

    from telemetry import rollups, storage

    start = PG_EPOCH + timedelta(microseconds=START_US)
    with connection.cursor() as cursor:
        storage.mark_dirty(cursor, {a: [start, start + timedelta(days=DAYS)] for a in asset_ids})
    took, report = timed(rollups.refresh_rollups)
    # As autovacuum would: statistics, and the visibility map the index-only scans rely on.
    with psycopg.connect(url, autocommit=True) as conn:
        for table in (storage.ROLLUP_1M, storage.ROLLUP_1H):
            conn.execute(f"VACUUM (ANALYZE) {table}")
    return took, report


def run(selection, start, end, bucket: str, fns: list[str], source: str) -> float:
    from telemetry import queries

    took, result = timed(queries.aggregate, queries.AggregateRequest(
        selection, start, end, bucket, fns, "none", source))
    assert result.series, "the benchmark query found no data"
    return took


def day_queries(twin, asset, repeats: int) -> dict[str, list[float]]:
    from telemetry.queries import Selection

    selection = Selection(twin, [asset], ["Pressure"])
    base = PG_EPOCH + timedelta(microseconds=START_US)
    rng = random.Random(1)
    out: dict[str, list[float]] = {"rollup": [], "raw": []}
    for _ in range(repeats):
        start = base + timedelta(days=rng.randrange(DAYS - 1), hours=rng.randrange(24))
        for source in out:
            out[source].append(run(selection, start, start + timedelta(hours=24), "1m",
                                   ["avg", "min", "max"], source))
    return out


#: (range, bucket) pairs a chart asks for, short to long: rollup vs raw at each.
RANGES = [(timedelta(minutes=10), "1m"), (timedelta(hours=1), "1m"), (timedelta(hours=6), "1m"),
          (timedelta(hours=24), "1m"), (timedelta(days=7), "1m"), (timedelta(days=7), "1h"),
          (timedelta(days=30), "1h"), (timedelta(days=30), "1d")]


def range_queries(twin, asset, repeats: int) -> list[tuple[str, str, list, list]]:
    """One asset-metric at every ``RANGES`` entry, ``source=rollup`` and ``source=raw``."""
    from telemetry.queries import Selection

    selection = Selection(twin, [asset], ["Pressure"])
    base = PG_EPOCH + timedelta(microseconds=START_US)
    rng = random.Random(2)
    out = []
    for span, bucket in RANGES:
        times: dict[str, list[float]] = {"rollup": [], "raw": []}
        n = repeats if span <= timedelta(days=1) else max(3, repeats // 5)
        for _ in range(n):
            start = base + rng.random() * (timedelta(days=DAYS) - span)
            start = start.replace(second=0, microsecond=0)
            for source in times:
                times[source].append(run(selection, start, start + span, bucket,
                                         ["avg", "min", "max"], source))
        out.append((_span_label(span), bucket, times["rollup"], times["raw"]))
    return out


def _span_label(span: timedelta) -> str:
    if span >= timedelta(days=1):
        return f"{span.days} d"
    return f"{span.seconds // 3600} h" if span >= timedelta(hours=1) else \
        f"{span.seconds // 60} min"


def month_queries(twin, assets, metrics, repeats: int) -> dict[str, list[float]]:
    from telemetry.queries import Selection

    selection = Selection(twin, assets, metrics)
    start = PG_EPOCH + timedelta(microseconds=START_US)
    end = start + timedelta(days=DAYS)
    fns = ["avg", "min", "max", "count"]
    return {source: [run(selection, start, end, "1h", fns, source) for _ in range(repeats)]
            for source in ("rollup", "raw")}


def _ratio(ours: list[float], baseline: list[float]) -> str:
    return f"{np.median(ours) / np.median(baseline):5.2f}"


def ms(values: list[float], q: float = 0.5) -> str:
    return f"{np.quantile(values, q) * 1000:9.1f} ms"


@contextlib.contextmanager
def kept_database(url: str) -> Iterator[str]:
    """``url``'s database, migrated and kept afterwards (``--database``: load once, query often)."""
    env = os.environ | {"DATABASE_URL": url}
    subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "-v0"], env=env,
                   cwd=REPO, check=True)
    yield url


def dataset(url: str) -> tuple[list, int, float, float, object]:
    """The bench twin's assets, loading the month and building the rollups unless kept ones."""
    from twins.models import Asset

    assets = list(Asset.objects.filter(twin__slug="bench").order_by("slug"))
    if assets:
        from telemetry.models import TelemetrySample

        print("reusing the kept dataset (load and rollup figures are from when it was built)")
        return assets, TelemetrySample.objects.count(), float("nan"), float("nan"), None
    assets = make_assets("bench", ASSETS)
    rows, load_s = load(url, [a.pk for a in assets])
    rollup_s, report = build_rollups(url, [a.pk for a in assets])
    return assets, rows, load_s, rollup_s, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--database", default="",
                        help="a database URL to load once and keep (default: a scratch one)")
    args = parser.parse_args()
    with kept_database(args.database) if args.database else bench_database("queries") as url:
        setup_django(url)
        assets, rows, load_s, rollup_s, report = dataset(url)
        twin = assets[0].twin
        day = day_queries(twin, assets[0], args.repeats)
        ranges = range_queries(twin, assets[0], args.repeats)
        month_all = month_queries(twin, assets, None, max(3, args.repeats // 10))
        month_one = month_queries(twin, assets, ["Pressure"], max(3, args.repeats // 10))
        from django.db import connections

        connections.close_all()
    print(f"queries on {rows:,} rows ({ASSETS} assets x 8 metrics, every {STEP_S} s, {DAYS} "
          f"days): loaded in {load_s:.0f} s ({rows / load_s:,.0f} rows/s, binary COPY)")
    if report is not None:
        print(f"  rollups built in {rollup_s:.0f} s: {report.minute_rows:,} minute rows, "
              f"{report.hour_rows:,} hour rows")
    print(f"  1. one asset-metric, 24 h, 1-min buckets ({args.repeats} random days)")
    print(f"       rollup_1m                  p50 {ms(day['rollup'])}   p95 "
          f"{ms(day['rollup'], 0.95)}   (target p50 <= 3 ms)")
    print(f"       baseline: raw samples      p50 {ms(day['raw'])}   p95 {ms(day['raw'], 0.95)}")
    print(f"       rollup / raw (p50)         {_ratio(day['rollup'], day['raw'])}")
    print("  1b. one asset-metric, every range: p50 rollup vs raw (target: rollup never slower)")
    for label, bucket, rollup, raw in ranges:
        print(f"       {label:>6} in {bucket:>2} buckets   rollup {ms(rollup)}   raw {ms(raw)}   "
              f"rollup / raw {_ratio(rollup, raw)}   (n={len(rollup)})")
    for label, result in (("every metric, 80 series", month_all),
                          ("one metric, 10 series", month_one)):
        print(f"  2. all assets, {label}, 1-h buckets over {DAYS} days "
              f"(median of {len(result['raw'])})")
        print(f"       rollup_1h                  {ms(result['rollup'])}   (target < 100 ms)")
        print(f"       baseline: raw samples      {ms(result['raw'])}   (target < 2 s)")


if __name__ == "__main__":
    main()
