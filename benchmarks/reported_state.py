"""What keeping the reported state costs ingest, and what coalescing saves the feed (prints).

Setup: a scratch database (created, migrated, dropped) with ``--assets`` assets of 8 metrics.
Each round ingests one batch of ``--batch`` telemetry.v1 events through ``ingest_batch`` (the
production path: validation, envelope de-duplication, binary COPY of the samples, rollup dirty
ranges and, since issue 14, ``twins.state.record_reported`` in the same transaction). Timed
separately in the same rounds, on the same batches: ``record_reported`` alone (its statement,
not its transaction's commit, which ingest shares). The figure is its share of the whole
batch's time (median over ``--rounds``); the batch itself, measured in the same run, is the
ceiling.

Then ``publish_states`` after all rounds: how many ``asset.state`` events the feed received
for how many readings (coalescing ratio), and its time per pass with every asset due.

Run: ``python benchmarks/reported_state.py [--assets 50 --batch 500 --rounds 30]`` with
DATABASE_URL set (or the embedded PostgreSQL); about 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import SKAB_METRICS, bench_database, setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with bench_database("reported") as url:
        setup_django(url)
        run(args)


def run(args) -> None:
    from django.db import connection, transaction

    from telemetry.services import RawPayload, ingest_batch
    from twins.models import Asset, ChangeEvent, Twin
    from twins.state import publish_states, record_reported

    twin = Twin.objects.create(slug="bench", name="Bench")
    assets = [Asset.objects.create(twin=twin, slug=f"a{i}", name=f"A{i}", kind="generic",
                                   metrics=[{"name": m} for m in SKAB_METRICS])
              for i in range(args.assets)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    whole, alone, n = [], [], 0
    for _ in range(args.rounds):
        events = []
        for _k in range(args.batch):
            asset = assets[n % len(assets)]
            ts = start + timedelta(seconds=n)
            events.append({"event_id": str(uuid.uuid4()), "twin_id": "bench",
                           "asset_id": asset.slug, "ts": ts.isoformat(),
                           "metrics": {m: float(n % 97) for m in SKAB_METRICS}})
            n += 1
        t0 = time.perf_counter()
        report = ingest_batch([RawPayload(e) for e in events], source="http")
        whole.append(time.perf_counter() - t0)
        assert report.accepted == args.batch, report.rejected[:3]
        readings = [(assets[(n - args.batch + k) % len(assets)].pk,
                     start + timedelta(seconds=n - args.batch + k), e["metrics"])
                    for k, e in enumerate(events)]
        with transaction.atomic(), connection.cursor() as cursor:
            t0 = time.perf_counter()  # the statement only: in ingest it shares the commit
            record_reported(cursor.cursor, readings, datetime.now(UTC))
            alone.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    published = publish_states()
    publish_s = time.perf_counter() - t0
    batch_ms, reported_ms = statistics.median(whole) * 1e3, statistics.median(alone) * 1e3
    readings = args.rounds * args.batch
    print(f"ingest_batch of {args.batch} events x {len(SKAB_METRICS)} metrics on "
          f"{args.assets} assets: median {batch_ms:.1f} ms "
          f"({args.batch / statistics.median(whole):,.0f} events/s)")
    print(f"record_reported alone on the same batches: median {reported_ms:.1f} ms = "
          f"{100 * reported_ms / batch_ms:.1f} % of the whole batch (ceiling: the batch)")
    print(f"publish_states with every asset due: {published} asset.state events in "
          f"{publish_s * 1e3:.1f} ms for {readings:,} readings "
          f"(feed events: {ChangeEvent.objects.filter(type='asset.state').count()}; "
          f"one per {readings / max(published, 1):,.0f} readings)")


if __name__ == "__main__":
    main()
