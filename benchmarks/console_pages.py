"""Server time and query count of each console page, at a small and a large plant (prints).

Builds a plant in a scratch database (created, migrated, dropped): TWINS twins, ASSETS assets
(each with a few recent readings and the reported state ingest keeps of them, so the
overview judges liveness), PROPOSALS proposals
(a tenth pending), ANOMALIES anomalies, AUDIT audit entries through ``record_change`` (the
production path), and SAMPLES telemetry samples (binary COPY) on one asset whose page is
charted over its whole history. Each page is rendered in-process through Django's test client
as a supervisor with access to every twin: median and p90 of REPEATS renders, and the number
of SQL queries of one render. The small plant (a tenth of every size) is measured in the same
run as the baseline: a page whose query count grows with the plant has an N+1.

Run: ``python benchmarks/console_pages.py [--scale 1.0 --repeats 7]`` with DATABASE_URL set
(or the embedded PostgreSQL). Bounded: a few minutes at scale 1 on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import (  # noqa: E402
    PG_EPOCH,
    SKAB_METRICS,
    bench_database,
    copy_binary,
    encode_samples,
    setup_django,
    skab_like_values,
)

SIZES = {"twins": 100, "assets": 1000, "proposals": 10_000, "anomalies": 5000, "audit": 2000,
         "samples": 1_000_000}
#: Issue 15's ceiling: every page renders in under this many milliseconds of server time.
TARGET_MS = 200
PAGES = ["/", "/approvals/", "/twins/", "/anomalies/",
         "/anomalies/?status=open&severity=critical", "/simulations/", "/audit/",
         "/audit/?verify=1", "/dashboard/proposals/{proposal}/",
         "/twins/{twin}/{asset}/?range=all", "/twins/{twin}/{asset}/?range=1h"]


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", help="cProfile this page of the large plant, print top 25")
    return parser.parse_args()


def _plant(prefix: str, sizes: dict) -> dict:
    """Twins, assets with recent readings, proposals, anomalies, audit entries."""
    from django.db import connection, transaction
    from django.utils import timezone

    from policy.models import Proposal
    from simulation.models import SimulationRun
    from telemetry.models import Anomaly, TelemetryEvent
    from twins.ledger import record_change
    from twins.models import Asset, Twin
    from twins.state import record_reported

    now = timezone.now()
    twins = Twin.objects.bulk_create(Twin(slug=f"{prefix}-{t}", name=f"Plant {t}")
                                     for t in range(sizes["twins"]))
    per_twin = max(1, sizes["assets"] // len(twins))
    assets = Asset.objects.bulk_create(
        Asset(twin=t, slug=f"pump-{k}", name=f"Pump {k}", kind="pump",
              metrics=[{"name": m, "unit": ""} for m in SKAB_METRICS])
        for t in twins for k in range(per_twin))
    TelemetryEvent.objects.bulk_create(
        TelemetryEvent(event_id=uuid.uuid4(), asset=a, ts=now - timedelta(seconds=s),
                       source="replay", received_at=now - timedelta(seconds=s))
        for a in assets for s in range(21))
    with connection.cursor() as cursor:  # the twin model's reported state, as ingest keeps it
        for s in range(20, -1, -1):
            record_reported(cursor, [(a.pk, now - timedelta(seconds=s),
                                      dict.fromkeys(SKAB_METRICS, 1.0)) for a in assets],
                            now - timedelta(seconds=s))
    run = SimulationRun.objects.create(asset=assets[0], status="succeeded", request={},
                                       result={"metrics": {}})
    severities = ["critical", "high", "medium", "low"]
    anomalies = Anomaly.objects.bulk_create(
        Anomaly(asset=assets[i % len(assets)], metric="Pressure", detector="ewma", kind="spike",
                severity=severities[i % 4], score=0.9, status="open" if i % 3 else "cleared",
                started_at=now, last_seen_at=now) for i in range(sizes["anomalies"]))
    proposals = Proposal.objects.bulk_create(
        Proposal(twin=assets[i % len(assets)].twin, asset=assets[i % len(assets)],
                 anomaly=anomalies[i % len(anomalies)], simulation=run, action="reduce_load",
                 parameters={"fraction": 0.1}, risk_level="MEDIUM", confidence=0.8,
                 decision="require_approval",
                 status="pending_approval" if i % 10 == 0 else "verified",
                 expires_at=now + timedelta(minutes=30)) for i in range(sizes["proposals"]))
    for i in range(sizes["audit"]):
        with transaction.atomic():
            record_change(actor="bench", action="proposal.touch", resource_type="proposal",
                          resource_id=proposals[i % len(proposals)].pk, operation="updated",
                          twin=assets[i % len(assets)].twin, after={"i": i})
    return {"twin": assets[0].twin.slug, "asset": assets[0].slug, "asset_id": assets[0].pk,
            "proposal": proposals[0].pk}


def _samples(url: str, asset_id: int, n: int) -> None:
    """``n`` samples (n / 8 events a second apart) on one asset, by binary COPY."""
    import psycopg
    from django.db import connection

    steps = n // len(SKAB_METRICS)
    ts = 756_000_000_000_000 + np.arange(steps, dtype=np.int64) * 1_000_000
    body = encode_samples(np.repeat(ts, 8), np.full(steps * 8, asset_id, dtype=np.int64),
                          SKAB_METRICS, np.tile(np.arange(8), steps),
                          skab_like_values(steps, seed=1).reshape(-1))
    with psycopg.connect(url) as conn:
        copy_binary(conn, body)
        conn.commit()
    with connection.cursor() as cursor:  # the events the chart's range is read from
        cursor.execute("""INSERT INTO telemetry_telemetryevent
            (event_id, asset_id, ts, quality, tags, source, received_at)
            SELECT gen_random_uuid(), %s, %s + make_interval(secs => g), 'good', '{}', 'replay',
                   now() - interval '1 day' FROM generate_series(0, %s - 1) g""",
                       [asset_id, PG_EPOCH + timedelta(microseconds=int(ts[0])), steps])
        cursor.execute("ANALYZE")


def _measure(client, url: str, repeats: int) -> tuple[float, float, int, int]:
    from django.db import connection

    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        status = client.get(url).status_code
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    # Queries through Django's cursor; the aggregate's one binary fetch bypasses it (+1).
    return statistics.median(times), times[int(0.9 * (len(times) - 1))], len(queries), status


def _profile(client, url: str) -> None:
    import cProfile
    import pstats

    from django.db import connection

    slow = []

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            slow.append(((time.perf_counter() - start) * 1000, sql[:150]))

    profiler = cProfile.Profile()
    with connection.execute_wrapper(timed):
        profiler.runcall(client.get, url)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    for ms, sql in sorted(slow, reverse=True)[:8]:
        print(f"{ms:8.1f} ms  {sql}")


def _client():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from twins.roles import grant_all_twins

    user, _ = get_user_model().objects.get_or_create(username="bench-supervisor")
    user.groups.add(Group.objects.get(name="supervisor"))
    grant_all_twins(user, "supervisor")
    client = Client()
    client.force_login(user)
    return client


def main() -> None:
    args = _args()
    import os

    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    if args.profile:
        os.environ["OPSTWIN_BENCH_PROFILE"] = args.profile
    with bench_database("console") as url:
        setup_django(url)
        client = _client()
        results = {}
        for label, factor in (("small", args.scale / 10), ("large", args.scale)):
            sizes = {k: max(1, int(v * factor)) for k, v in SIZES.items()}
            started = time.perf_counter()
            ids = _plant(label, sizes)
            _samples(url, ids["asset_id"], sizes["samples"])
            print(f"{label} plant: {sizes} built in {time.perf_counter() - started:.0f} s")
            results[label] = {page: _measure(client, page.format(**ids), args.repeats)
                              for page in PAGES}
            if args.profile and label == "large":
                _profile(client, args.profile.format(**ids))
        print(f"\n{'page':45} {'small ms p50/p90 q':>22} {'large ms p50/p90 q':>22}"
              f"  target (issue 15)")
        for page in PAGES:
            row = [f"{p50:7.1f}/{p90:7.1f} {q:3d}" + ("" if s == 200 else f" [{s}]")
                   for p50, p90, q, s in (results["small"][page], results["large"][page])]
            verdict = "ok" if results["large"][page][0] < TARGET_MS else "OVER"
            print(f"{page:45} {row[0]:>22} {row[1]:>22}  p50 < {TARGET_MS} ms: {verdict}")


if __name__ == "__main__":
    main()
