"""Audited writes: changes/s through ``twins.ledger.record_change`` against a bare INSERT.

Each writer process commits one state change per transaction for DURATION seconds: an audit
entry (HMAC chain) and a change event, under the ledger's sequencing lock, the way every
service records a change. The ceiling, measured in the same run on the same server, is the
same two rows (same columns and sizes) INSERTed into unlocked copies of the two tables with
no chain: what the database does for this shape without the ledger's ordering guarantees.
Prints changes/s for 1, 2 and 4 writers, the ceiling and the ratio; issue 16's targets are
>= 2,000 changes/s with 4 writers and >= 25 % of the ceiling.

Needs DATABASE_URL (PostgreSQL). Runs in a scratch database ``<name>_auditbench`` (created,
migrated, dropped). Run: ``python benchmarks/audited_writes.py [--duration 5]``. Bounded:
about 6 × DURATION seconds plus a migration.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WRITERS = (1, 2, 4)


def _scratch(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_auditbench"
    return (name, urlunsplit(parts._replace(path="/postgres")),
            urlunsplit(parts._replace(path=f"/{name}")))


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    os.environ["DB_POOL_MAX_SIZE"] = "2"
    os.environ.pop("REDIS_URL", None)  # in-memory channel layer: no notifier traffic at exit
    import django

    django.setup()


def _ledger_writer(url: str, duration: float, start, counts) -> None:
    _django(url)
    from django.db import transaction

    from twins.ledger import record_change
    from twins.models import Twin

    twin = Twin.objects.get(slug="bench")
    start.wait()
    done, deadline = 0, time.perf_counter() + duration
    while time.perf_counter() < deadline:
        with transaction.atomic():
            record_change(actor="bench", action="twin.touch", resource_type="twin",
                          resource_id=twin.pk, operation="updated", twin=twin,
                          after={"id": twin.pk, "slug": "bench", "n": done})
        done += 1
    counts.put(done)


def _bare_writer(url: str, duration: float, start, counts) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(url) as conn:
        twin_id = conn.execute("SELECT id FROM twins_twin WHERE slug = 'bench'").fetchone()[0]
        start.wait()
        done, deadline = 0, time.perf_counter() + duration
        while time.perf_counter() < deadline:
            with conn.transaction():
                digest = uuid.uuid4().hex * 2
                conn.execute(
                    "INSERT INTO bench_audit (seq, at, actor, role, action, resource_type, "
                    "resource_id, twin_slug, before, after, reason, request_id, "
                    "client_address, prev_hash, hash, key_id) VALUES (%s, now(), 'bench', "
                    "'system', 'twin.touch', 'twin', %s, 'bench', NULL, %s, '', '', '', %s, "
                    "%s, 'k')", [done, str(twin_id), Jsonb({"id": twin_id, "n": done}),
                                 digest, digest])
                conn.execute(
                    "INSERT INTO bench_event (type, resource_type, resource_id, operation, "
                    "twin_id, actor, data, created_at) VALUES ('twin.updated', 'twin', %s, "
                    "'updated', %s, 'bench', %s, now())",
                    [str(twin_id), twin_id, Jsonb({"id": twin_id, "n": done})])
            done += 1
    counts.put(done)


def _run(target, url: str, writers: int, duration: float) -> float:
    ctx = mp.get_context("spawn")
    start, counts = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, duration, start, counts))
             for _ in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(3.0)  # every writer has set up Django and connected
    start.set()
    total = sum(counts.get(timeout=duration + 120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / duration


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    import psycopg

    base = os.environ.get("DATABASE_URL")
    if not base:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    name, admin, url = _scratch(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        _django(url)
        from django.core.management import call_command

        from twins.models import Twin

        call_command("migrate", verbosity=0)
        Twin.objects.create(slug="bench", name="Bench")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_audit (LIKE policy_auditentry INCLUDING DEFAULTS "
                         "INCLUDING IDENTITY)")
            conn.execute("CREATE TABLE bench_event (LIKE aiw_changeevent INCLUDING DEFAULTS "
                         "INCLUDING IDENTITY)")
        print(f"audited writes, {args.duration:.0f} s per case, one change per transaction")
        print(f"{'writers':>7} {'ledger/s':>10} {'bare INSERT/s':>14} {'ratio':>6}")
        for writers in WRITERS:
            ours = _run(_ledger_writer, url, writers, args.duration)
            bare = _run(_bare_writer, url, writers, args.duration)
            print(f"{writers:>7} {ours:>10.0f} {bare:>14.0f} {ours / bare:>6.0%}", flush=True)
        print("targets (issue 16): >= 2,000 changes/s with 4 writers, >= 25 % of bare INSERT")
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
