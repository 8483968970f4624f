"""Fan-out benchmark of the AIW live stream (prints figures; no assertions on time).

One daphne process serves SUBSCRIBERS SSE streams (each following one of TWINS twins, so
every event goes to SUBSCRIBERS / TWINS streams, plus FIREHOSE streams that follow every
twin) while a producer process commits RATE events/s through ``twins.ledger.record_change``
(the production write path: audit entry + change event under the sequencing lock) for
SECONDS seconds. During the run, RECONNECTS streams are cut at random moments and resume
with ``Last-Event-ID``. Afterwards each stream's received ids are compared with the feed in
the database.

Figures: delivered events/s, lag from commit (the producer's clock after COMMIT returns) to
the client reading the frame (same machine, same clock): p50/p99 for live delivery and over
everything (resumed catch-up included), gaps and duplicates (must be 0), server CPU.
Then a /diff page of 1,000 events over HTTP (p50), next to the baseline measured in the same
run: the same 1,000 events read from PostgreSQL in-process (query + payload), and the bare
SQL fetch. Targets: live p99 < 250 ms, 0 gaps, 0 duplicates; /diff p50 < 50 ms.

Runs in a scratch database ``<DATABASE_URL's name>_fanout`` (created, migrated, dropped).
Run: ``python benchmarks/fanout.py [--seconds 20 --rate 2000 --subscribers 500]`` with
DATABASE_URL (and REDIS_URL for the channel layer) set. Bounded: about 1-2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ID = re.compile(rb'"id":(\d+)')


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--twins", type=int, default=50)
    parser.add_argument("--firehose", type=int, default=5, help="streams following every twin")
    parser.add_argument("--reconnects", type=int, default=100, help="forced reconnects")
    parser.add_argument("--writer", choices=["outbox", "audit"], default="outbox",
                        help="outbox: change events under the sequencing lock (default); "
                             "audit: full record_change per event (capped by the audit chain)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return parser.parse_args()


# --- scratch database and Django ----------------------------------------------------------

def scratch_database() -> tuple[str, str]:
    """(admin URL, scratch URL): the scratch database sits next to DATABASE_URL's."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        sys.exit("set DATABASE_URL (a PostgreSQL the benchmark may create a database on)")
    parts = urlsplit(base)
    name = parts.path.lstrip("/") + "_fanout"
    return base, urlunsplit(parts._replace(path="/" + name))


def _psql(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def create_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _psql(admin_url, f'CREATE DATABASE "{name}"')
    env = os.environ | {"DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                   check=True)


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    import django

    django.setup()


def seed(twins: int) -> str:
    """Twins, a user who sees all of them, and its agent token (returned)."""
    from django.contrib.auth import get_user_model

    from aiw.services import issue_token
    from twins.models import Twin

    Twin.objects.bulk_create(Twin(slug=f"t{k:03d}", name=f"Twin {k}") for k in range(twins))
    user = get_user_model().objects.create_user("bench", is_superuser=True)
    return issue_token(user=user, name="bench", scopes=["read"])[1]


# --- the server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(url: str, port: int) -> subprocess.Popen:
    env = os.environ | {"DATABASE_URL": url, "AIW_MAX_STREAMS_PER_CALLER": "100000",
                        "AIW_TOKEN_RATE": "1000000/min", "AIW_STREAM_QUEUE_MAX": "5000",
                        "LOG_LEVEL": "WARNING", "DB_CONN_MAX_AGE": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p",
                             str(port), "opstwin_site.asgi:application"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("daphne did not start")


def own_cpu_seconds() -> float:
    return cpu_seconds(os.getpid())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the producer (its own process) -------------------------------------------------------

def _audited_batch(twin_rows: list) -> list[int]:
    """The production path: record_change per event (audit entry + change event)."""
    from django.db import transaction

    from twins.ledger import record_change

    with transaction.atomic():
        return [record_change(actor="bench", action="twin.touch", resource_type="twin",
                              resource_id=t.pk, operation="updated", twin=t,
                              after=_twin_json(t)).id for t in twin_rows]


def _outbox_batch(twin_rows: list) -> list[int]:
    """The feed's half of that path alone: change events inserted under the same sequencing
    lock, one notification per commit (the audit chain's per-entry cost left out)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from aiw.feed import notify_subscribers
    from twins.ledger import AUDIT_LOCK_KEY
    from twins.models import ChangeEvent

    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
        rows = ChangeEvent.objects.bulk_create(
            ChangeEvent(type="twin.updated", resource_type="twin", resource_id=str(t.pk),
                        operation="updated", twin=t, actor="bench", data=_twin_json(t),
                        created_at=now) for t in twin_rows)
    notify_subscribers(rows[-1].id)
    return [r.id for r in rows]


def _twin_json(twin) -> dict:
    return {"id": twin.pk, "slug": twin.slug, "name": twin.name, "description": "",
            "created_at": "2024-01-01T00:00:00Z"}


def produce(url: str, rate: int, seconds: float, twins: int, writer: str, out: str) -> None:
    """Commit ``rate`` events/s for ``seconds`` in small transactions (``writer``: "outbox" or
    "audit", see above); write ``{event_id: commit_time}`` to ``out``."""
    setup_django(url)
    from twins.models import Twin

    write = _outbox_batch if writer == "outbox" else _audited_batch
    twin_rows = list(Twin.objects.order_by("slug"))
    commits: dict[int, float] = {}
    start, made = time.time(), 0
    while (now := time.time()) - start < seconds:
        due = min(int((now - start) * rate) - made, 50)
        if due <= 0:
            time.sleep(0.002)
            continue
        ids = write([twin_rows[(made + k) % twins] for k in range(due)])
        commits.update(dict.fromkeys(ids, time.time()))
        made += due
    Path(out).write_text(json.dumps(commits))


def audited_rate(seconds: float = 3.0) -> float:
    """record_change events/s one process sustains here (50 per transaction)."""
    from twins.models import Twin

    twin_rows, made, started = list(Twin.objects.all()[:50]), 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        made += len(_audited_batch(twin_rows))
    return made / (time.perf_counter() - started)


# --- the subscribers (asyncio, this process) ------------------------------------------------

@dataclass
class Stream:
    """One SSE subscriber: its filter, the ids it received (in order) and receive times."""

    twin: str | None
    received: list[int] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)  # when this stream was cut (time.time)
    cursor: str = ""
    task: asyncio.Task | None = None


def _cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{event_id}".encode()).decode().rstrip("=")


async def follow(port: int, token: str, stream: Stream, start: str) -> None:
    """Follow /subscribe, reconnecting with Last-Event-ID whenever the connection ends."""
    while True:
        cursor = stream.cursor or start
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        query = f"?twin={stream.twin}" if stream.twin else ""
        writer.write(f"GET /subscribe{query} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {token}\r\nLast-Event-ID: {cursor}\r\n\r\n"
                     .encode())
        try:
            await _read_frames(reader, stream)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _read_frames(reader: asyncio.StreamReader, stream: Stream) -> None:
    await reader.readuntil(b"\r\n\r\n")  # status line and headers (HTTP/1.0: no chunking)
    buffer = b""
    while chunk := await reader.read(1 << 16):
        now = time.time()
        *frames, buffer = (buffer + chunk).split(b"\n\n")
        # the first "id" of a frame is the event's (its data may hold other "id"s)
        ids = [int(ID.search(f).group(1)) for f in frames
               if f.startswith(b"id: ") and b"\nevent: aiw." not in f]
        stream.received += ids
        stream.at += [now] * len(ids)
        if ids:
            stream.cursor = _cursor(ids[-1])


async def cut_connections(streams: list[Stream], count: int, seconds: float, restart) -> None:
    """Cancel ``count`` random streams at random moments and start them again (resume)."""
    moments = sorted(random.uniform(1.0, seconds - 1.0) for _ in range(count))
    started = time.monotonic()
    for moment in moments:
        await asyncio.sleep(max(0.0, moment - (time.monotonic() - started)))
        stream = random.choice(streams)
        stream.task.cancel()
        stream.cuts.append(time.time())
        restart(stream)


async def run_subscribers(port: int, token: str, streams: list[Stream], start: str,
                          args: argparse.Namespace, producer) -> None:
    def launch(stream: Stream) -> None:
        stream.task = asyncio.create_task(follow(port, token, stream, start))

    for stream in streams:
        launch(stream)
    await asyncio.sleep(3.0)  # let every stream connect and go live
    producer.start()
    await cut_connections(streams, args.reconnects, args.seconds, launch)
    while producer.is_alive():
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)  # drain
    for stream in streams:
        stream.task.cancel()


# --- figures ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def verify(streams: list[Stream], after: int) -> tuple[int, int, int]:
    """(gaps, duplicates, out-of-order) over every stream, against the database."""
    from twins.models import ChangeEvent

    by_twin: dict[str, list[int]] = {}
    for event_id, slug in ChangeEvent.objects.filter(id__gt=after).order_by("id") \
            .values_list("id", "twin__slug"):
        by_twin.setdefault(slug, []).append(event_id)
    everything = sorted(i for ids in by_twin.values() for i in ids)
    gaps = duplicates = disorder = 0
    for stream in streams:
        expected = by_twin.get(stream.twin, []) if stream.twin else everything
        got = stream.received
        gaps += len(set(expected) - set(got))
        duplicates += len(got) - len(set(got))
        disorder += sum(1 for a, b in zip(got, got[1:], strict=False) if b <= a)
    return gaps, duplicates, disorder


def lags(streams: list[Stream], commits: dict[int, float]) -> tuple[list[float], list[float]]:
    """(live lags, all lags) in ms. A delivery is not live when its stream was cut between
    the event's commit and its arrival: it came from the catch-up after the resume."""
    live, everything = [], []
    for stream in streams:
        for event_id, at in zip(stream.received, stream.at, strict=True):
            if event_id not in commits:
                continue
            lag = (at - commits[event_id]) * 1000
            everything.append(lag)
            if not any(commits[event_id] < cut <= at for cut in stream.cuts):
                live.append(lag)
    return live, everything


def time_diff_pages(port: int, token: str, after: int, repeats: int = 30) -> dict[str, float]:
    """p50 ms of: GET /diff (1,000 events) over HTTP; the same read in-process; bare SQL."""
    import http.client

    from django.db import connection

    from aiw.feed import read_events

    def p50(fn) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    with connection.cursor() as cursor:  # fresh statistics, as autovacuum would leave them
        cursor.execute("ANALYZE aiw_changeevent")
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def http_page(limit: int = 1000) -> None:
        conn.request("GET", f"/diff?since={_cursor(after)}&limit={limit}",
                     headers={"Authorization": f"Bearer {token}"})
        body = conn.getresponse().read()
        assert len(json.loads(body)["events"]) == limit

    def sql_only() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT e.*, t.slug FROM aiw_changeevent e LEFT JOIN twins_twin t "
                           "ON t.id = e.twin_id WHERE e.id > %s ORDER BY e.id LIMIT 1000",
                           [after])
            cursor.fetchall()

    return {"http": p50(http_page), "http_one": p50(lambda: http_page(1)),
            "read": p50(lambda: read_events(after, limit=1000)),
            "sql": p50(sql_only)}


def report(args, streams, commits, seconds, gaps, dups, disorder, cpu, diff) -> None:
    live, everything = lags(streams, commits)
    delivered = sum(len(s.received) for s in streams)
    rows = [
        (f"events produced ({args.writer} writer)",
         f"{len(commits)} ({len(commits) / seconds:.0f}/s)", "2,000/s"),
        ("subscribers (twin-filtered + firehose)", f"{len(streams)}", "500"),
        ("deliveries", f"{delivered} ({delivered / seconds:.0f}/s)", ""),
        ("forced reconnects (Last-Event-ID)", f"{args.reconnects}", ""),
        ("lag p50 / p99, live (ms)",
         f"{percentile(live, 50):.1f} / {percentile(live, 99):.1f}", "p99 < 250"),
        ("lag p50 / p99, all incl. resumes (ms)",
         f"{percentile(everything, 50):.1f} / {percentile(everything, 99):.1f}", ""),
        ("gaps / duplicates / out of order", f"{gaps} / {dups} / {disorder}", "0 / 0 / 0"),
        ("CPU s per s: server / all 500 clients",
         f"{cpu / seconds:.2f} / {diff['client_cpu']:.2f}", "2 cores in all"),
        ("/diff 1,000 events over HTTP, p50 (ms)", f"{diff['http']:.1f}", "< 50"),
        ("baseline: /diff of 1 event over HTTP, p50 (ms)", f"{diff['http_one']:.1f}", ""),
        ("baseline: same read in-process, p50 (ms)", f"{diff['read']:.1f}", ""),
        ("baseline: bare SQL fetch, p50 (ms)", f"{diff['sql']:.1f}", ""),
        ("record_change throughput, 1 process (ev/s)", f"{diff['audited']:.0f}", ""),
    ]
    rows.append(("machine load average (1 min, 2 cores)", f"{os.getloadavg()[0]:.1f}", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")


def main() -> None:
    args = _args()
    admin_url, url = scratch_database()
    print(f"scratch database {urlsplit(url).path.lstrip('/')}: migrating ...", flush=True)
    create_database(admin_url, url)
    setup_django(url)
    token = seed(args.twins)
    port = free_port()
    server = start_server(url, port)
    out = str(ROOT / ".fanout-commits.json")
    try:
        from aiw.feed import newest_event_id

        after = newest_event_id()
        slugs = [f"t{k % args.twins:03d}" for k in range(args.subscribers - args.firehose)]
        streams = [Stream(twin=s) for s in slugs] + [Stream(twin=None)
                                                     for _ in range(args.firehose)]
        producer = multiprocessing.get_context("spawn").Process(
            target=produce, args=(url, args.rate, args.seconds, args.twins, args.writer, out))
        cpu_before, started = cpu_seconds(server.pid), time.time()
        client_before = own_cpu_seconds()
        print(f"{len(streams)} streams, producing {args.rate}/s for {args.seconds:.0f} s ...",
              flush=True)
        asyncio.run(run_subscribers(port, token, streams, _cursor(after) if after else "0",
                                    args, producer))
        elapsed, cpu = time.time() - started, cpu_seconds(server.pid) - cpu_before
        client_cpu = (own_cpu_seconds() - client_before) / elapsed
        commits = {int(k): v for k, v in json.loads(Path(out).read_text()).items()}
        gaps, dups, disorder = verify(streams, after)
        diff = time_diff_pages(port, token, after) | {"audited": audited_rate(),
                                                      "client_cpu": client_cpu}
        report(args, streams, commits, args.seconds, gaps, dups, disorder,
               cpu * args.seconds / elapsed, diff)
    finally:
        server.terminate()
        server.wait(10)
        Path(out).unlink(missing_ok=True)
        if not args.keep:
            from django.db import connections

            connections.close_all()
            _psql(admin_url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" '
                             "WITH (FORCE)")


if __name__ == "__main__":
    main()
