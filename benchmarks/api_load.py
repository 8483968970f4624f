"""Load test of the HTTP API with mixed agent traffic (prints figures; no assertions on time).

One uvicorn process (the production server, as in the image) on a loopback port, against a
scratch database with a twin of 4 pumps and 30 minutes of 1 Hz SKAB-shaped telemetry each.
CONCURRENCY asyncio clients (httpx, keep-alive, one bearer token of an ``agent``) each loop for
SECONDS over a weighted mix (``benchmarks/_apiload.MIX``): latest state 30 %, raw query 15 %,
aggregate 10 %, /diff following its cursor 15 %, /snapshot 5 %, the manifest 5 %, HTTP ingest
of 10 events 15 %, an inline Monte Carlo what-if of 2,000 samples 5 %.

Figures: per endpoint requests/s and p50/p95/p99 latency, and the error count (must be 0).
Same-run ceiling: the same clients on ``GET /health`` (no database, no auth) against the same
server, before the mix; the ratio of the mix's throughput to it is printed.

Run: ``python benchmarks/api_load.py [--seconds 20 --concurrency 16]`` with DATABASE_URL (a
server it may create a scratch database on) and REDIS_URL (Celery broker, channel layer,
rate-limit cache: detection tasks queued by ingest are purged at the end). Ports: the first free
one from --port (default 9500). Bounded: about 1-2 minutes including setup.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._apiload import (  # noqa: E402
    HEALTH_ONLY,
    Server,
    errors_of,
    free_port_in,
    run_load,
    seed,
    server_env,
    table,
)
from benchmarks._telemetry_bench import bench_database, setup_django  # noqa: E402


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=9500)
    return parser.parse_args()


def purge_celery_queues() -> None:
    """Drop the detection tasks the ingest requests queued (no worker runs here)."""
    from opstwin_site.celery import app

    with app.connection_for_write() as conn:
        for queue in ("default", "detect", "simulate", "actions"):
            conn.default_channel.queue_purge(queue)


def main() -> None:
    args = _args()
    with bench_database("apiload") as url, tempfile.TemporaryDirectory() as tmp:
        setup_django(url)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request
        t0 = time.perf_counter()
        import os

        # Seed without a broker: detection tasks of the seed go to Celery's memory transport.
        redis_url = os.environ.pop("REDIS_URL", None)
        from django.conf import settings

        settings.CELERY_BROKER_URL, broker = "memory://", settings.CELERY_BROKER_URL
        token = seed(datetime.now(UTC))
        settings.CELERY_BROKER_URL = broker
        if redis_url:
            os.environ["REDIS_URL"] = redis_url
        print(f"seeded in {time.perf_counter() - t0:.1f} s")
        port = free_port_in(args.port, 9599)
        server = Server(port, server_env(url), Path(tmp) / "web.log").start()
        base = f"http://127.0.0.1:{port}"
        try:
            run_load(base, token, seconds=3, concurrency=args.concurrency)  # warm up
            ceiling = run_load(
                base, token, mix=HEALTH_ONLY, seconds=args.seconds / 2, concurrency=args.concurrency
            )
            mixed = run_load(base, token, seconds=args.seconds, concurrency=args.concurrency)
        finally:
            server.stop()
        if redis_url:
            purge_celery_queues()
    print(f"\nAPI load, {args.concurrency} clients, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"ceiling (same run): GET /health for {args.seconds / 2:g} s")
    print("\n".join(table(ceiling, args.seconds / 2)))
    print(f"\nmixed agent traffic for {args.seconds:g} s")
    print("\n".join(table(mixed, args.seconds)))
    rate, top = len(mixed) / args.seconds, len(ceiling) / (args.seconds / 2)
    errors = errors_of(mixed) + errors_of(ceiling)
    print(
        f"\nmixed {rate:.1f} req/s = {rate / top:.1%} of the /health ceiling "
        f"({top:.1f} req/s); errors: {len(errors)}"
    )
    for sample in errors[:5]:
        print(f"  {sample.endpoint} {sample.status}: {sample.body[:200]}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
