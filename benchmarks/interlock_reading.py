"""What an interlock costs: the last reading by receipt time on a large telemetry table.

Data: 4 pump assets × 8 SKAB metrics, one event per second per asset for 2 days ending now
(691,200 events, 5.5 M samples), each received 0.2 s after its sensor time, loaded with COPY
into a scratch database and VACUUM ANALYZEd. Two assets have a quiet sensor: on ``pump-2`` the
Temperature stopped 10 minutes before the end, on ``pump-3`` a day before, while the other
seven metrics kept reporting, so the search by receipt has to walk back over events without it.

Timed (p50 / p95 over ``--repeats`` calls, milliseconds):

* ``latest_reading`` (``policy.state``) with the interlock horizon (``max_age_s`` 60) and the
  default horizon (3600 s, evidence and drift), on a current metric and on both quiet ones;
* one whole ``interlocks.check`` (reading, future check, lag check);
* the baseline measured in the same run: the previous lookup by sensor time (newest sample on
  (asset, metric, ts), then its event's receipt: two queries; the new lookup is one).

The plan of the receipt query is printed once (index scan on ``tevent_asset_received``).
Run: ``python benchmarks/interlock_reading.py [--repeats 200]`` (a scratch database on
``DATABASE_URL``'s server or the embedded PostgreSQL is created and dropped; about a minute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import (  # noqa: E402
    PG_EPOCH,
    SKAB_METRICS,
    bench_database,
    copy_binary,
    encode_samples,
    make_assets,
    setup_django,
    skab_like_values,
)

ASSETS, SECONDS = 4, 2 * 86400
QUIET = {2: 600, 3: 86400}  # asset index -> seconds since its Temperature stopped
TEMPERATURE = SKAB_METRICS.index("Temperature")


def _events(conn, asset_id: int, ts: list[datetime]) -> None:
    with conn.cursor() as cur, cur.copy(
            "COPY telemetry_telemetryevent (event_id, asset_id, ts, quality, tags, source, "
            "received_at) FROM STDIN") as copy:
        for t in ts:
            copy.write_row((uuid.uuid4(), asset_id, t, "good", "{}", "replay",
                            t + timedelta(seconds=0.2)))


def load(url: str, assets: list, end: datetime) -> float:
    """COPY every asset's events and samples; returns seconds."""
    import psycopg

    start = time.perf_counter()
    first = end - timedelta(seconds=SECONDS - 1)
    ts = [first + timedelta(seconds=k) for k in range(SECONDS)]
    ts_us = np.array([(t - PG_EPOCH) // timedelta(microseconds=1) for t in ts], dtype=np.int64)
    with psycopg.connect(url) as conn:
        for i, asset in enumerate(assets):
            _events(conn, asset.pk, ts)
            values = skab_like_values(SECONDS, seed=i).ravel()
            metric_index = np.tile(np.arange(len(SKAB_METRICS)), SECONDS)
            row_ts = np.repeat(ts_us, len(SKAB_METRICS))
            keep = np.ones(len(values), dtype=bool)
            if i in QUIET:
                keep &= ~((metric_index == TEMPERATURE) & (row_ts > ts_us[-1] - QUIET[i] * 10**6))
            copy_binary(conn, encode_samples(row_ts[keep], np.full(int(keep.sum()), asset.pk),
                                             SKAB_METRICS, metric_index[keep], values[keep]))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE telemetry_telemetryevent")
        conn.execute("VACUUM ANALYZE telemetry_telemetrysample")
    return time.perf_counter() - start


def stats_ms(fn, repeats: int) -> str:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    runs.sort()
    return (f"p50 {statistics.median(runs):7.3f} ms   p95 "
            f"{runs[int(0.95 * (len(runs) - 1))]:7.3f} ms")


def by_sensor_time(asset, metric: str):
    """The previous lookup (baseline): newest sample by sensor time, then its event's receipt."""
    from telemetry.models import TelemetryEvent, TelemetrySample

    row = (TelemetrySample.objects.filter(asset=asset, metric=metric).order_by("-ts")
           .values_list("ts", "value").first())
    return row and (TelemetryEvent.objects.filter(asset=asset, ts=row[0])
                    .order_by("-received_at").values_list("received_at", flat=True).first())


def explain(asset, metric: str, floor: datetime) -> str:
    from django.db import connection

    from policy.state import _LAST_RECEIVED

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + _LAST_RECEIVED,
                       {"asset": asset.pk, "metric": metric, "floor": floor})
        return "\n".join("    " + row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    with bench_database("interlock") as url:
        setup_django(url)
        from django.utils import timezone

        from policy import interlocks
        from policy.state import latest_reading

        assets = make_assets("bench", ASSETS)
        end = timezone.now().astimezone(UTC).replace(microsecond=0)
        seconds = load(url, assets, end)
        print(f"loaded {ASSETS * SECONDS:,} events, about {ASSETS * SECONDS * 8:,} samples "
              f"in {seconds:.1f} s (COPY + VACUUM ANALYZE)")
        now = end + timedelta(seconds=1)  # as if the data were live: the last event 1 s ago
        guard = {"id": "t", "metric": "Pressure", "op": "<", "value": 1e9, "max_age_s": 60}
        cases = [
            ("current metric, horizon 60 s", assets[0], "Pressure", 60.0),
            ("current metric, horizon 3600 s", assets[0], "Pressure", 3600.0),
            ("quiet for 10 min, horizon 60 s", assets[2], "Temperature", 60.0),
            ("quiet for 10 min, horizon 3600 s", assets[2], "Temperature", 3600.0),
            ("quiet for 1 day, horizon 60 s", assets[3], "Temperature", 60.0),
            ("quiet for 1 day, horizon 3600 s", assets[3], "Temperature", 3600.0),
        ]
        print(f"\nlatest_reading by receipt time ({args.repeats} calls each):")
        for label, asset, metric, horizon in cases:
            line = stats_ms(lambda a=asset, m=metric, h=horizon:
                            latest_reading(a, m, horizon_s=h, now=now), args.repeats)
            print(f"  {label:34s} {line}")
        print("\nbaseline, the previous lookup by sensor time:")
        for label, asset, metric, _ in cases[::2]:
            line = stats_ms(lambda a=asset, m=metric: by_sensor_time(a, m), args.repeats)
            print(f"  {label.split(',')[0]:34s} {line}")
        print("\none interlocks.check (reading, future check, lag check):")
        line = stats_ms(lambda: interlocks.check(guard, asset=assets[0], now=now), args.repeats)
        print(f"  {'current metric, max_age_s 60':34s} {line}")
        print("\nplan, quiet for 1 day, horizon 3600 s:")
        print(explain(assets[3], "Temperature", now - timedelta(seconds=3600)))


if __name__ == "__main__":
    main()
