"""Fan-out benchmark of the AIW live stream against a bare server (prints figures; no assertions).

Two servers follow the same feed in the same run, one after the other, with the same client
code: **ours** (one uvicorn process serving ``opstwin_site.asgi``: the hub, ``/subscribe`` or
``/ws/feed``) and **bare**, the ceiling: one asyncio process (uvloop) that listens for the same
PostgreSQL notification, reads the events with the same query (``aiw.feed.read_events``),
filters by twin, catches up after ``Last-Event-ID``/``since`` and writes the same frames
straight to each socket (WebSocket frames encoded by hand: no library, no Django).

Each phase opens SUBSCRIBERS streams (SSE or, with ``--transport ws``, WebSocket), each
following one of TWINS twins, plus FIREHOSE streams that follow every twin, while a producer
process commits RATE events/s (change events under the sequencing lock, one notification per
commit) for SECONDS seconds. RECONNECTS streams are cut at random moments and resume from
their cursor. Afterwards each stream's ids are compared with the feed in the database.

Figures per server: deliveries/s (events summed over the streams' filters), live lag from
commit (the producer's clock after COMMIT) to the client reading the frame p50/p99, gaps /
duplicates / out of order (must be 0), server CPU-s per s over the whole phase (connecting
included) and while producing (from the first commit to the end of the drain: the per-event
cost without the connection storm); then ours/bare ratios.
Targets (issue 16): 1,000 subscribers, >= 10,000 deliveries/s, 0 gaps, 0 duplicates, live
p99 < 100 ms, server CPU <= 2x the bare server's.

Runs in a scratch database ``<DATABASE_URL's name>_fanout`` (created, migrated, dropped).
Run: ``python benchmarks/fanout.py [--transport sse|ws [--deflate]] [--seconds 10 --rate 500
--subscribers 1000]`` with DATABASE_URL set (``FANOUT_LOG=<file>`` keeps the servers' output).
Bounded: about 2-3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ID = re.compile(rb'"id":(\d+)')
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# What browsers offer (RFC 7692); the bare server ignores it and sends uncompressed frames.
EXTENSIONS = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="events per second produced")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--twins", type=int, default=50)
    parser.add_argument("--firehose", type=int, default=5, help="streams following every twin")
    parser.add_argument("--reconnects", type=int, default=50, help="forced reconnects")
    parser.add_argument("--transport", choices=["sse", "ws"], default="sse")
    parser.add_argument("--deflate", action="store_true",
                        help="WebSocket clients offer permessage-deflate, as browsers do")
    parser.add_argument("--servers", default="bare,ours", help="phases, in order")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
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


# --- the servers -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, url: str, port: int, transport: str) -> subprocess.Popen:
    """Start ``ours`` (uvicorn) or ``bare`` on ``port``; returns once it accepts."""
    from opstwin_site import webserver

    env = os.environ | {"DATABASE_URL": url, "AIW_MAX_STREAMS_PER_CALLER": "100000",
                        "AIW_TOKEN_RATE": "1000000/min", "AIW_STREAM_QUEUE_MAX": "5000",
                        "LOG_LEVEL": "WARNING"}
    argv = (webserver.command("127.0.0.1", port) if kind == "ours" else
            [sys.executable, __file__, "--serve-bare", str(port), "--transport", transport])
    log = open(os.environ.get("FANOUT_LOG", os.devnull), "a")  # noqa: SIM115 - child's
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"the {kind} server did not start")


def own_cpu_seconds() -> float:
    return cpu_seconds(os.getpid())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ws_frame(text: str) -> bytes:
    """One unmasked RFC 6455 text frame."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes([0x81, size]) + data
    if size < 1 << 16:
        return bytes([0x81, 126]) + size.to_bytes(2, "big") + data
    return bytes([0x81, 127]) + size.to_bytes(8, "big") + data


class BareClient:
    """One bare stream: its socket writer and, while catching up, the live events held back."""

    __slots__ = ("after", "pending", "writer")

    def __init__(self, writer) -> None:
        self.writer, self.pending, self.after = writer, [], 0


async def bare_server(port: int, transport: str) -> None:
    """The ceiling: notification, one read, frames encoded once, written to every socket."""
    from aiw.db import run_db
    from aiw.feed import listen_for_commits, read_events
    from twins.feed import newest_event_id, parse_cursor
    from twins.feed_scope import FeedFilter

    clients: dict[str | None, set[BareClient]] = {}
    wake, last = asyncio.Event(), [await run_db(newest_event_id)]

    def frames(items) -> bytes:
        if transport == "sse":  # one HTTP/1.1 chunk, as uvicorn frames each send
            body = b"".join(item.sse for item in items)
            return b"%x\r\n%b\r\n" % (len(body), body)
        return b"".join(ws_frame(item.json) for item in items)

    async def handle(reader, writer) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        target = head.split(" ", 2)[1]
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.split("\r\n")[1:] if line)}
        twin = query.get("twin")
        after = parse_cursor(headers.get("last-event-id") or query.get("since") or "0")
        if transport == "sse":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\nd\r\nretry: 2000\n\n\r\n")
        else:
            accept = base64.b64encode(hashlib.sha1(  # noqa: S324 - RFC 6455 says SHA-1
                headers["sec-websocket-key"].encode() + WS_GUID).digest()).decode()
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + accept.encode() + b"\r\n\r\n")
        client = BareClient(writer)
        clients.setdefault(twin, set()).add(client)
        try:
            while True:  # catch up, as ours does: subscribed first, then the database
                page = await run_db(read_events, after, limit=500, where=FeedFilter(twin=twin))
                if page:
                    writer.write(frames(page))
                    after = page[-1].id
                if len(page) < 500:
                    break
            held, client.pending, client.after = client.pending, None, after
            rest = [item for item in held if item.id > after]
            if rest:
                writer.write(frames(rest))
            while await reader.read(1 << 16):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            clients[twin].discard(client)
            writer.close()

    async def pump() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            wake.clear()
            while True:
                items = await run_db(read_events, last[0], limit=1000)
                if not items:
                    break
                last[0] = items[-1].id
                by_twin: dict[str, list] = {}
                for item in items:
                    by_twin.setdefault(item.twin, []).append(item)
                for twin, mine in [(None, items), *by_twin.items()]:
                    chunk = None
                    for client in clients.get(twin, ()):
                        if client.pending is not None:
                            client.pending.extend(mine)
                            continue
                        if mine[0].id <= client.after:  # its catch-up read these
                            client.writer.write(frames([i for i in mine if i.id > client.after]))
                            continue
                        chunk = chunk or frames(mine)
                        client.writer.write(chunk)
                if len(items) < 1000:
                    break

    async def listen() -> None:
        async for _ in listen_for_commits():
            wake.set()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await asyncio.gather(server.serve_forever(), pump(), listen())


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


def produce(url: str, rate: int, seconds: float, twins: int, writer: str, out: str,
            producing=None) -> None:
    """Commit ``rate`` events/s for ``seconds`` in small transactions (``writer``: "outbox" or
    "audit", see above); write ``{event_id: commit_time}`` to ``out``. ``producing`` (a
    multiprocessing Event) is set just before the first commit."""
    setup_django(url)
    from twins.models import Twin

    write = _outbox_batch if writer == "outbox" else _audited_batch
    twin_rows = list(Twin.objects.order_by("slug"))
    if producing is not None:
        producing.set()
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


# --- the subscribers (asyncio, this process) -----------------------------------------------

@dataclass
class Stream:
    """One subscriber: its filter, the ids it received (in order) and receive times."""

    twin: str | None
    received: list[int] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)  # when this stream was cut (time.time)
    cursor: str = ""
    task: asyncio.Task | None = None
    live: bool = False  # the server answered (its headers came)


def _cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{event_id}".encode()).decode().rstrip("=")


async def follow(port: int, token: str, stream: Stream, start: str, transport: str,
                 deflate: bool = False) -> None:
    """Follow the stream, reconnecting from the last cursor whenever the connection ends
    (``deflate``: offer WebSocket per-message compression, RFC 7692)."""
    while True:
        cursor = stream.cursor or start
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        query = f"?twin={stream.twin}" if stream.twin else ""
        if transport == "sse":
            request = (f"GET /subscribe{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Bearer {token}\r\nLast-Event-ID: {cursor}\r\n\r\n")
        else:
            query = f"{query}&since={cursor}" if query else f"?since={cursor}"
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET /ws/feed{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Bearer {token}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       f"Sec-WebSocket-Version: 13\r\n{EXTENSIONS if deflate else ''}\r\n")
        writer.write(request.encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")  # status line and headers
            stream.live = True
            if transport == "sse":
                await _read_sse(reader, stream)
            else:
                compressed = b"permessage-deflate" in head.lower()
                await _read_ws(reader, stream, zlib.decompressobj(-15) if compressed else None)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _record(stream: Stream, ids: list[int]) -> None:
    if ids:
        now = time.time()
        stream.received += ids
        stream.at += [now] * len(ids)
        stream.cursor = _cursor(ids[-1])


async def _read_sse(reader: asyncio.StreamReader, stream: Stream) -> None:
    buffer = b""  # the body is chunked (HTTP/1.1)
    while size := int(await reader.readuntil(b"\r\n"), 16):
        chunk = (await reader.readexactly(size + 2))[:-2]
        *frames, buffer = (buffer + chunk).split(b"\n\n")
        # the first "id" of a frame is the event's (its data may hold other "id"s)
        _record(stream, [int(ID.search(f).group(1)) for f in frames
                         if f.startswith(b"id: ") and b"\nevent: aiw." not in f])


async def _read_ws(reader: asyncio.StreamReader, stream: Stream, inflate=None) -> None:
    """Read unmasked server frames (RFC 6455 section 5.2); ``inflate``: the connection's
    zlib decompressor when permessage-deflate was agreed (RFC 7692: RSV1 marks a compressed
    message; the sender's context carries over from message to message)."""
    buffer = b""
    while chunk := await reader.read(1 << 16):
        buffer += chunk
        ids, at = [], 0
        while len(buffer) - at >= 2:
            opcode, size, start = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, at + 2
            if size == 126:
                size, start = int.from_bytes(buffer[at + 2:at + 4], "big"), at + 4
            elif size == 127:
                size, start = int.from_bytes(buffer[at + 2:at + 10], "big"), at + 10
            if len(buffer) < start + size:
                break
            payload = buffer[start:start + size]
            if buffer[at] & 0x40 and inflate is not None:
                payload = inflate.decompress(payload + b"\x00\x00\xff\xff")
            at = start + size
            if opcode == 0x8:
                _record(stream, ids)
                return
            if opcode == 0x1 and not payload.startswith(b'{"type":"aiw.'):
                ids.append(int(ID.search(payload).group(1)))
        buffer = buffer[at:]
        _record(stream, ids)


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
                          args: argparse.Namespace, producer, producing, meter) -> float:
    """Run the phase; returns the server's CPU-s per s from the first commit (``producing``
    set) to the end of the drain (``meter()``: the server's CPU seconds so far)."""

    def launch(stream: Stream) -> None:
        stream.task = asyncio.create_task(follow(port, token, stream, start, args.transport,
                                                 args.deflate))

    for stream in streams:
        launch(stream)
    deadline = time.monotonic() + 120  # let every stream connect and go live
    while not all(s.live for s in streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    print(f"  {sum(s.live for s in streams)} streams live", flush=True)
    await asyncio.sleep(1.0)
    producer.start()
    window = asyncio.create_task(_first_commit(producer, producing, meter))
    await cut_connections(streams, args.reconnects, args.seconds, launch)
    while producer.is_alive():
        await asyncio.sleep(0.2)
    await asyncio.sleep(3.0)  # drain
    cpu_started, started = await window
    for stream in streams:
        stream.task.cancel()
    await asyncio.gather(*(s.task for s in streams), return_exceptions=True)
    return (meter() - cpu_started) / (time.time() - started)


async def _first_commit(producer, producing, meter) -> tuple[float, float]:
    """(server CPU seconds, time.time()) when the producer is about to commit its first event
    (polled every 10 ms)."""
    while not producing.is_set() and producer.is_alive():
        await asyncio.sleep(0.01)
    return meter(), time.time()


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


def run_phase(kind: str, url: str, token: str, args: argparse.Namespace) -> dict:
    """One server under the whole load; returns its figures."""
    from twins.feed import newest_event_id

    port = free_port()
    server = start_server(kind, url, port, args.transport)
    out = str(ROOT / f".fanout-commits-{kind}.json")
    try:
        after = newest_event_id()
        slugs = [f"t{k % args.twins:03d}" for k in range(args.subscribers - args.firehose)]
        streams = [Stream(twin=s) for s in slugs] + [Stream(twin=None)
                                                     for _ in range(args.firehose)]
        context = multiprocessing.get_context("spawn")
        producing = context.Event()
        producer = context.Process(target=produce, args=(url, args.rate, args.seconds,
                                                         args.twins, "outbox", out, producing))
        print(f"{kind}: {len(streams)} {args.transport} streams, producing {args.rate}/s for "
              f"{args.seconds:.0f} s ...", flush=True)
        cpu_before, started = cpu_seconds(server.pid), time.time()
        streaming_cpu = asyncio.run(run_subscribers(
            port, token, streams, _cursor(after) if after else "0", args, producer, producing,
            lambda: cpu_seconds(server.pid)))
        elapsed, cpu = time.time() - started, cpu_seconds(server.pid) - cpu_before
        diff = time_diff_page(port, token, after) if kind == "ours" else None
    finally:
        server.terminate()
        server.wait(20)
    commits = {int(k): v for k, v in json.loads(Path(out).read_text()).items()}
    Path(out).unlink(missing_ok=True)
    gaps, dups, disorder = verify(streams, after)
    live, _ = lags(streams, commits)
    delivered = sum(len(s.received) for s in streams)
    return {"events": len(commits) / args.seconds, "deliveries": delivered / args.seconds,
            "p50": percentile(live, 50), "p99": percentile(live, 99), "gaps": gaps,
            "dups": dups, "disorder": disorder, "cpu": cpu / elapsed,
            "streaming_cpu": streaming_cpu, "diff": diff}


def time_diff_page(port: int, token: str, after: int, repeats: int = 20) -> tuple[float, float]:
    """(p50 ms of GET /diff with 1,000 events over HTTP, p50 ms of the same read in-process:
    its baseline)."""
    import http.client
    import statistics

    from aiw.feed import read_events

    def p50(fn) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    conn = http.client.HTTPConnection("127.0.0.1", port)

    def page() -> None:
        conn.request("GET", f"/diff?since={_cursor(after) if after else 0}&limit=1000",
                     headers={"Authorization": f"Bearer {token}"})
        conn.getresponse().read()

    return p50(page), p50(lambda: read_events(after, limit=1000))


def report(args: argparse.Namespace, figures: dict[str, dict]) -> None:
    kinds = list(figures)
    rows = [("events produced /s", "events", "{:.0f}"), ("deliveries /s", "deliveries", "{:.0f}"),
            ("live lag p50 (ms)", "p50", "{:.1f}"), ("live lag p99 (ms)", "p99", "{:.1f}"),
            ("gaps", "gaps", "{}"), ("duplicates", "dups", "{}"),
            ("out of order", "disorder", "{}"), ("server CPU-s per s", "cpu", "{:.2f}"),
            ("  while producing", "streaming_cpu", "{:.2f}")]
    deflate = " offering permessage-deflate" if args.deflate else ""
    print(f"\n{args.subscribers} {args.transport} subscribers{deflate} ({args.firehose} firehose), "
          f"{args.reconnects} forced reconnects per phase")
    print(f"{'measure':<22}" + "".join(f"{k:>12}" for k in kinds)
          + ("   ours/bare" if len(kinds) == 2 else ""))
    for name, key, fmt in rows:
        values = [figures[k][key] for k in kinds]
        line = f"{name:<22}" + "".join(f"{fmt.format(v):>12}" for v in values)
        ratio = key in ("p50", "p99", "cpu", "streaming_cpu", "deliveries")
        if len(kinds) == 2 and ratio and values[0]:
            line += f"{values[1] / values[0]:>11.2f}x"
        print(line)
    print("targets: deliveries >= 10,000/s, 0 gaps, 0 duplicates, live p99 < 100 ms, "
          "CPU ours/bare <= 2x")
    if figures.get("ours", {}).get("diff"):
        http, read = figures["ours"]["diff"]
        print(f"/diff of 1,000 events over HTTP p50 {http:.1f} ms; the same read in-process "
              f"{read:.1f} ms (target 50 ms)")
    print(f"machine load average (1 min, 2 cores): {os.getloadavg()[0]:.1f}")


def main() -> None:
    args = _args()
    if args.serve_bare:
        setup_django(os.environ["DATABASE_URL"])
        import uvloop

        uvloop.run(bare_server(args.serve_bare, args.transport))
        return
    admin_url, url = scratch_database()
    print(f"scratch database {urlsplit(url).path.lstrip('/')}: migrating ...", flush=True)
    create_database(admin_url, url)
    setup_django(url)
    token = seed(args.twins)
    try:
        figures = {kind: run_phase(kind, url, token, args) for kind in args.servers.split(",")}
        report(args, figures)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            _psql(admin_url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" '
                             "WITH (FORCE)")


if __name__ == "__main__":
    main()
