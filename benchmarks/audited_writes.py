"""Audited writes: changes/s through ``twins.ledger`` against a bare INSERT of the same rows.

Each writer process commits state changes for DURATION seconds: an audit entry (HMAC chain)
and a change event per change, under the ledger's sequencing lock, the way every service
records a change. Two modes: ``single`` (one change per transaction, ``record_change``) and
``batch`` (BATCH changes per transaction, ``record_changes``: one lock acquisition, one
INSERT). The ceiling, measured in the same run on the same server, is the same rows (same
columns and sizes, the same one-statement INSERT of both tables, batched the same way) into
unlocked, unindexed copies of the two tables with no chain: what the database does for this
shape without the ledger's ordering guarantees. A second ceiling, **serialized**, is the same
bare INSERT with a transaction-scoped advisory lock taken first and so held through COMMIT: what
any writer can do here that keeps the feed's ids visible in commit order (ARCHITECTURE.md), the
ledger's one fixed cost, as one writer's commit must reach the disk before the next may start.
Prints changes/s for 1, 2 and 4 writers per mode, both ceilings and the ratios; issue 16's
targets are >= 2,000 changes/s with 4 writers and >= 25 % of the bare INSERT.

``--profile`` also times where a change spends its time (1 and 4 writers, single and batch):
the wall time of each step of ``twins.ledger`` per change, by wrapping the module's step
functions in the writer processes: ``prepare`` (before the lock: labels, JSON, row parameters),
``lock+tip`` (one round trip, including the wait for other writers), ``chain`` (one HMAC per
entry), ``insert`` (one statement) and ``commit`` (all three under the lock), ``announce``
(the on-commit callback).

Needs DATABASE_URL (PostgreSQL). Runs in a scratch database ``<name>_auditbench`` (created,
migrated, dropped). Run: ``python benchmarks/audited_writes.py [--duration 5] [--batch 10]
[--repeat 3] [--profile | --profile-only]``. Bounded: about 18 x REPEAT x (DURATION + 4)
seconds plus a migration, 4 x (DURATION + 4) more with ``--profile``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
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


class _Steps:
    """Wall time per step of ``twins.ledger`` in this process (``--profile``)."""

    STEPS = ("prepare", "lock+tip", "chain (HMAC)", "insert", "commit", "announce")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STEPS, 0.0)

    def wrap(self, module, attr: str, step: str) -> None:
        inner = getattr(module, attr)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started

        setattr(module, attr, timed)

    def install(self) -> None:
        from twins import ledger

        for attr, step in (("_prepare", "prepare"), ("_lock", "lock+tip"),
                           ("_chain", "chain (HMAC)"), ("_insert", "insert"),
                           ("announce_commit", "announce")):
            self.wrap(ledger, attr, step)


def _ledger_writer(url: str, duration: float, start, counts, batch: int, profile: bool) -> None:
    _django(url)
    from django.db import transaction

    from twins.ledger import record_change, record_changes
    from twins.models import Twin

    twin = Twin.objects.get(slug="bench")
    steps = _Steps()
    if profile:
        steps.install()

    def change(n: int) -> dict:
        return {"actor": "bench", "action": "twin.touch", "resource_type": "twin",
                "resource_id": twin.pk, "operation": "updated", "twin": twin,
                "after": {"id": twin.pk, "slug": "bench", "n": n}}

    start.wait()
    done, wall, deadline = 0, time.perf_counter(), time.perf_counter() + duration
    while time.perf_counter() < deadline:
        with transaction.atomic():
            if batch:
                record_changes([change(done + i) for i in range(batch)])
            else:
                record_change(**change(done))
            announced = steps.seconds["announce"]
            before_commit = time.perf_counter()
        steps.seconds["commit"] += (time.perf_counter() - before_commit
                                    - (steps.seconds["announce"] - announced))
        done += batch or 1
    counts.put((done, time.perf_counter() - wall, steps.seconds))


def _serialized_writer(url: str, duration: float, start, counts, batch: int,
                       profile: bool) -> None:
    """``_bare_writer`` under a transaction-scoped advisory lock: the serialized ceiling."""
    _bare_writer(url, duration, start, counts, batch, profile, lock=True)


def _bare_writer(url: str, duration: float, start, counts, batch: int, profile: bool,
                 lock: bool = False) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    rows = batch or 1
    entry = ("(%s, now(), 'bench', 'system', 'twin.touch', 'twin', %s, 'bench', NULL, %s, '', "
             "'', '', %s, %s, 'k')")
    event = "(now(), 'twin.updated', 'twin', %s, 'updated', %s, 'bench', %s)"
    statement = (
        "WITH entries AS (INSERT INTO bench_audit (seq, at, actor, role, action, resource_type, "
        "resource_id, twin_slug, before, after, reason, request_id, client_address, prev_hash, "
        f"hash, key_id) VALUES {', '.join([entry] * rows)}) "
        "INSERT INTO bench_event (created_at, type, resource_type, resource_id, operation, "
        f"twin_id, actor, data) VALUES {', '.join([event] * rows)} RETURNING id")
    with psycopg.connect(url) as conn:
        twin_id = conn.execute("SELECT id FROM twins_twin WHERE slug = 'bench'").fetchone()[0]
        start.wait()
        done, wall, deadline = 0, time.perf_counter(), time.perf_counter() + duration
        while time.perf_counter() < deadline:
            with conn.transaction():
                if lock:
                    conn.execute("SELECT pg_advisory_xact_lock(7)")
                entries, events = [], []
                for n in range(done, done + rows):
                    digest = uuid.uuid4().hex * 2
                    state = Jsonb({"id": twin_id, "slug": "bench", "n": n})
                    entries += [n, str(twin_id), state, digest, digest]
                    events += [str(twin_id), twin_id, state]
                conn.execute(statement, entries + events).fetchall()
            done += rows
    counts.put((done, time.perf_counter() - wall, {}))


def _run(target, url: str, writers: int, duration: float, batch: int = 0,
         profile: bool = False) -> tuple[float, dict]:
    """(changes/s over all writers, mean seconds per change of each step) of one case."""
    ctx = mp.get_context("spawn")
    start, counts = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, duration, start, counts, batch, profile))
             for _ in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(3.0)  # every writer has set up Django and connected
    start.set()
    results = [counts.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join()
    done = sum(r[0] for r in results)
    per_change = {step: sum(r[2].get(step, 0.0) for r in results) / max(done, 1)
                  for step in _Steps.STEPS}
    per_change["total (wall)"] = sum(r[1] for r in results) / max(done, 1)
    return done / duration, per_change


def _profile(url: str, duration: float, batch: int) -> None:
    """Print the step table: ms per change for 1 and 4 writers, single and batch."""
    cases = [(1, 0), (4, 0), (1, batch), (4, batch)]
    table, rates = {}, {}
    for writers, size in cases:
        rates[(writers, size)], table[(writers, size)] = _run(
            _ledger_writer, url, writers, duration, size, True)
    print("\nwhere a change spends its time: ms per change, summed over the writers' wall "
          "time\n(lock+tip includes the wait for the lock; chain, insert and commit run under "
          "it;\nprofiled runs: a timer around each step; the last row is their changes/s)")
    labels = [f"{w}w {'single' if not b else f'batch {b}'}" for w, b in cases]
    print(f"{'step':<14}" + "".join(f"{label:>14}" for label in labels))
    for step in (*_Steps.STEPS, "total (wall)"):
        print(f"{step:<14}" + "".join(f"{table[c][step] * 1e3:>14.3f}" for c in cases))
    held = ("chain (HMAC)", "insert", "commit")
    print(f"{'under lock':<14}"
          + "".join(f"{sum(table[c][s] for s in held) * 1e3:>14.3f}" for c in cases))
    print(f"{'changes/s':<14}" + "".join(f"{rates[c]:>14.0f}" for c in cases))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=10, help="changes per batch transaction")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs (ledger, bare) per case; prints the medians")
    parser.add_argument("--profile", action="store_true",
                        help="also time each step of a change (1 and 4 writers)")
    parser.add_argument("--profile-only", action="store_true",
                        help="only the step timing, no throughput table")
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
        if not args.profile_only:
            print(f"audited writes, {args.duration:.0f} s per case, median of {args.repeat} "
                  f"pair(s); single = one change per transaction, batch = {args.batch} changes "
                  "per transaction")
            print(f"{'mode':>8} {'writers':>7} {'ledger/s':>10} {'bare INSERT/s':>14} "
                  f"{'ratio':>6} {'serialized/s':>13} {'ratio':>6}")
            for mode, batch in (("single", 0), ("batch", args.batch)):
                for writers in WRITERS:
                    runs = [[_run(target, url, writers, args.duration, batch)[0]
                             for target in (_ledger_writer, _bare_writer, _serialized_writer)]
                            for _ in range(args.repeat)]
                    ours, bare, serial = (statistics.median(r[i] for r in runs)
                                          for i in range(3))
                    ratio = statistics.median(r[0] / r[1] for r in runs)
                    serial_ratio = statistics.median(r[0] / r[2] for r in runs)
                    print(f"{mode:>8} {writers:>7} {ours:>10.0f} {bare:>14.0f} {ratio:>6.0%} "
                          f"{serial:>13.0f} {serial_ratio:>6.0%}", flush=True)
            print("targets (issue 16): >= 2,000 changes/s with 4 writers, >= 25 % of bare "
                  "INSERT; serialized = bare INSERT under a lock held through COMMIT")
        if args.profile or args.profile_only:
            _profile(url, args.duration, args.batch)
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
