"""End-to-end ingest: SKAB-shaped events over a real Mosquitto into committed rows.

Setup (all private, all removed at the end): a scratch database, a Mosquitto started on a free
port (persistence on, ``max_inflight_messages`` as in docker/mosquitto.conf), ``--ingest``
``manage.py ingest_mqtt``
processes sharing one MQTT v5 shared subscription with persistent sessions, and ``--publishers``
publisher processes offering ``--rate`` events/s in total for ``--seconds`` seconds. Each event
carries the 8 SKAB metrics (values replayed from the SKAB files when present, else SKAB-like)
and is stamped with its publish time, so commit time minus ``ts`` is the publish-to-commit
latency; the ingest processes histogram it (``telemetry.ingest_status``) and the benchmark
merges their histograms. Detection is enqueued to ``REDIS_URL`` as in production (the tasks of
this run are removed afterwards when the queue was empty before).

Two phases. *Sustained*: publishers offer ``--rate`` (default 4,000 events/s = 32,000
samples/s, the target) for ``--seconds`` (60) while ingest runs; printed: committed samples/s
over the window after ``--warmup``, p50/p99/max publish-to-commit latency. *Capacity*: the
ingest processes stop, ``--capacity-rate`` x ``--capacity-seconds`` events queue up in their
persistent sessions, they restart and drain the backlog; the drain rate is what ingest commits
at full speed without publishers competing for the two cores. Each drain is set against the
binary-COPY ceiling (``ingest_ceiling``) measured right before and right after it, ``--pairs``
times; the median ratio is the figure (other work on a shared machine moves both). Last, a
check that every published event was stored exactly once.

Run: ``python benchmarks/ingest_e2e.py [--seconds 60 --rate 4000 --ingest 2 --publishers 2]``
(about 5 minutes; ``--seconds 0`` for the drain pairs only, ``--profile DIR`` for py-spy samples
of the ingest processes while they drain; needs the ``mosquitto`` binary; ``REDIS_URL`` set to
enqueue detection as in production). ``make bench`` runs it with every other benchmark.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _telemetry_bench import (  # noqa: E402
    REPO,
    SKAB_METRICS,
    bench_database,
    make_assets,
    setup_django,
    skab_like_values,
)

TWIN = "bench"


def _skab_rows(limit: int = 20_000) -> list[list[float]]:
    """SKAB sensor rows from the data folder, or SKAB-like synthetic rows without it."""
    try:
        from demo.skab import default_data_dir, list_files, read_run

        root = default_data_dir(REPO)
        rows: list[list[float]] = []
        for name in list_files(root):
            rows += read_run(root, name).X.tolist()
            if len(rows) >= limit:
                return rows[:limit]
        return rows
    except (FileNotFoundError, OSError, ValueError):
        return skab_like_values(limit).tolist()


def publisher(url: str, assets: list[str], rate: float, seconds: float, seed: int,
              result: multiprocessing.Queue) -> None:
    """Publish ``rate`` events/s for ``seconds``; put (published, unacked) on ``result``.

    One thread drives paho (publish writes straight to the socket; ``loop`` reads PUBACKs
    every few ms): no network thread to wake per message, so the publishers, which share the
    two cores with what is measured, stay cheap. Waits for every PUBACK before reporting.
    """
    sys.path.insert(0, str(REPO))
    import paho.mqtt.client as mqtt

    rows = _skab_rows()
    bodies = [",".join(f'"{m}":{v!r}' for m, v in zip(SKAB_METRICS, row, strict=True))
              for row in rows]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"bench-pub-{seed}-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(2000)
    client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]), keepalive=60)
    while not client.is_connected():
        client.loop(0.1)
    infos = []
    started, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            asset = assets[(sent + seed) % len(assets)]
            ts = datetime.now(UTC).isoformat()
            payload = (f'{{"event_id":"{uuid.uuid4()}","twin_id":"{TWIN}","asset_id":"{asset}",'
                       f'"ts":"{ts}","metrics":{{{bodies[(sent * 7 + seed) % len(bodies)]}}},'
                       f'"tags":{{"source":"skab"}},"quality":"good"}}')
            infos.append(client.publish(f"opstwin/{TWIN}/{asset}/telemetry", payload.encode(),
                                        qos=1))
            sent += 1
        client.loop(0.002)
    deadline = time.monotonic() + 60
    while any(not i.is_published() for i in infos[-2000:]) and time.monotonic() < deadline:
        client.loop(0.05)
    result.put((sent, sum(1 for i in infos if not i.is_published())))
    client.disconnect()


def _committed(processes) -> int:
    return sum(int(p.status().get("accepted", 0)) for p in processes)


def _lag(processes):
    from telemetry.ingest_status import LagHistogram

    lag = LagHistogram()
    for process in processes:
        lag.merge(LagHistogram.from_dict(process.status().get("event_lag", {})))
    return lag


def _phase(broker_url: str, ingest: list, args, rate: float, seconds: float, tag: int) -> dict:
    """Publish ``rate`` events/s for ``seconds``; measure commits after ``args.warmup`` s."""
    from telemetry.tests.harness import wait_for

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    assets = [f"pump-{i}" for i in range(args.assets)]
    pubs = [ctx.Process(target=publisher, args=(broker_url, assets, rate / args.publishers,
                                                seconds, tag * 10 + k, results))
            for k in range(args.publishers)]
    before = _committed(ingest)
    for p in pubs:
        p.start()
    time.sleep(0.5 + args.warmup)
    c0, t0 = _committed(ingest), time.monotonic()
    time.sleep(max(seconds - args.warmup, 1))
    c1, t1 = _committed(ingest), time.monotonic()
    sent = [results.get(timeout=180) for _ in pubs]
    for p in pubs:
        p.join()
    published = sum(n for n, _ in sent)
    drained = wait_for(lambda: _committed(ingest) >= before + published, 180, every=0.5)
    time.sleep(1.5)  # let the status files catch up with the last commit
    lag = _lag(ingest)
    return {"rate": rate, "published": published, "unacked": sum(u for _, u in sent),
            "window_s": t1 - t0, "window_events": c1 - c0, "drained": drained,
            "p50": lag.quantile(0.5), "p99": lag.quantile(0.99), "max": lag.max_s,
            "per_process": [int(p.status().get("accepted", 0)) for p in ingest]}


def _publish(broker_url: str, args, rate: float, seconds: float, tag: int) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    assets = [f"pump-{i}" for i in range(args.assets)]
    pubs = [ctx.Process(target=publisher, args=(broker_url, assets, rate / args.publishers,
                                                seconds, tag * 10 + k, results))
            for k in range(args.publishers)]
    for p in pubs:
        p.start()
    sent = [results.get(timeout=seconds + 180) for _ in pubs]
    for p in pubs:
        p.join()
    return sum(n for n, _ in sent), sum(u for _, u in sent)


def _capacity(broker, database: str, ingest: list, args, ceiling, tag: int) -> dict:
    """Backlog drain: queue events in the stopped processes' sessions, then time the catch-up.

    Publishers are done before ingest restarts, so they take no CPU from what is measured. The
    COPY ceiling is measured right before the restart and right after the drain.
    """
    for process in ingest:
        process.stop()  # SIGTERM: commits what it holds; the sessions stay on the broker
    published, unacked = _publish(broker.url, args, args.capacity_rate, args.capacity_seconds,
                                  tag)
    before = ceiling()
    for process in ingest:
        process.start()
    spies = _profile(ingest, args, tag)
    deadline = time.monotonic() + 600
    while _committed(ingest) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    c0, t0, cpu0 = _committed(ingest), time.monotonic(), _cpu_split(ingest, broker, database)
    while _committed(ingest) < published and time.monotonic() < deadline:
        time.sleep(0.05)
    c1, t1, cpu1 = _committed(ingest), time.monotonic(), _cpu_split(ingest, broker, database)
    for spy in spies:
        spy.send_signal(2)  # SIGINT: py-spy writes its profile and exits
        spy.wait(30)
    after = ceiling()
    return {"published": published, "unacked": unacked, "drained": c1 >= published,
            "window_s": t1 - t0, "window_events": c1 - c0, "ceiling": (before, after),
            "cpu_s": {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1},
            "per_process": [int(p.status().get("accepted", 0)) for p in ingest]}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (Linux ``/proc``; 0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _cpu_split(ingest: list, broker, database: str) -> dict[str, float]:
    """CPU seconds so far of the ingest processes, the broker, and each PostgreSQL backend
    serving ``database`` (keyed ``pg<pid>``; a backend that ends takes its seconds along)."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        backends = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]
    return {"ingest": sum(_cpu_seconds(p.process.pid) for p in ingest),
            "broker": _cpu_seconds(broker.process.pid)} | \
        {f"pg{pid}": _cpu_seconds(pid) for pid in backends}


def _profile(ingest: list, args, tag: int) -> list:
    """Start ``py-spy record`` on each ingest process for the drain (``--profile``)."""
    if not args.profile:
        return []
    import subprocess

    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    # --gil: only samples where the thread holds the GIL, i.e. runs Python; without it a thread
    # blocked on the GIL, a lock or a socket counts as busy in the frame it waits in.
    gil = ["--gil"] if args.profile_gil else []
    return [subprocess.Popen(["py-spy", "record", "--pid", str(p.process.pid), "--threads",
                              *gil, "--format", "raw", "--rate", "50", "--output",
                              str(out / f"{p.client_id}-{tag}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for p in ingest]


def _run(url: str, args: argparse.Namespace, workdir: Path, ceiling) -> list[dict]:
    from telemetry.tests.harness import IngestProcess, Mosquitto

    broker = Mosquitto(workdir, max_inflight=args.inflight).start()
    ingest = [IngestProcess(workdir, url=broker.url, database=url, client_id=f"bench-ingest-{i}",
                            share_group="bench", batch_size=args.batch_size,
                            redis=True).start()
              for i in range(args.ingest)]
    try:
        for process in ingest:
            process.wait_connected()
        phases = [_phase(broker.url, ingest, args, args.rate, args.seconds, 0)] \
            if args.seconds > 0 else []
        if args.capacity_seconds > 0:
            phases += [_capacity(broker, url, ingest, args, ceiling, pair + 1)
                       for pair in range(args.pairs)]
        return phases
    finally:
        for process in ingest:
            process.stop()
        broker.stop()


def _stored(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        events = conn.execute("SELECT count(*) FROM telemetry_telemetryevent").fetchone()[0]
        samples = conn.execute("SELECT count(*) FROM telemetry_telemetrysample").fetchone()[0]
    return events, samples


def _redis_queue_len() -> int | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url).llen("detect")


def _clear_detect_queue(before: int | None) -> str:
    if before is None:
        return "no REDIS_URL: detection enqueued in memory"
    if before:
        return f"detect queue held {before} tasks before the run: left untouched"
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).delete("detect")
    return "detection tasks of this run removed from the detect queue"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=4000, help="offered events/s in total")
    parser.add_argument("--ingest", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--assets", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--inflight", type=int, default=5000,
                        help="Mosquitto max_inflight_messages (docker/mosquitto.conf: 5000)")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--capacity-rate", type=float, default=8000,
                        help="capacity phase: events/s queued while ingest is stopped")
    parser.add_argument("--capacity-seconds", type=float, default=25, help="0 skips it")
    parser.add_argument("--ceiling-rows", type=int, default=500_000)
    parser.add_argument("--pairs", type=int, default=3,
                        help="capacity phase: (ceiling, drain, ceiling) runs; the median counts")
    parser.add_argument("--profile", default="",
                        help="folder for py-spy profiles of the ingest processes while draining")
    parser.add_argument("--profile-gil", action="store_true",
                        help="profile only while holding the GIL (Python CPU, not waits)")
    args = parser.parse_args()
    queue_before = _redis_queue_len()
    with bench_database("e2e") as url, tempfile.TemporaryDirectory() as tmp:
        setup_django(url)
        make_assets(TWIN, args.assets)
        from django.db import connections

        connections.close_all()
        with bench_database("ceiling") as ceiling_url, Ceiling(ceiling_url, args) as ceiling:
            top = ceiling()
            phases = _run(url, args, Path(tmp), ceiling)
            top = (top + ceiling()) / 2
        events, samples = _stored(url)
    note = _clear_detect_queue(queue_before)
    _report(args, phases, top, events, samples, note)


class Ceiling:
    """The binary-COPY ceiling (``ingest_ceiling``), measurable again and again in one run.

    Calling it empties the scratch samples table and times the COPY of the same pre-encoded
    ``--ceiling-rows`` rows (rows/s), so every measurement does the same work.
    """

    def __init__(self, url: str, args) -> None:
        self.url, self.rows = url, args.ceiling_rows

    def __enter__(self) -> Ceiling:
        import psycopg
        from ingest_ceiling import _asset_ids, pregenerate

        self.conn = psycopg.connect(self.url)
        self.bodies = pregenerate(self.rows, 50_000, _asset_ids(self.conn))
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def __call__(self) -> float:
        from ingest_ceiling import _copy_all

        self.conn.execute("TRUNCATE telemetry_telemetrysample")
        self.conn.commit()
        started = time.perf_counter()
        _copy_all(self.conn, self.bodies, "telemetry_telemetrysample")
        return self.rows // len(SKAB_METRICS) * len(SKAB_METRICS) / (time.perf_counter() - started)


def _report(args, phases: list[dict], top: float, events: int, samples: int, note: str) -> None:
    m = len(SKAB_METRICS)
    print(f"ingest end to end: {args.publishers} publishers -> Mosquitto -> {args.ingest} "
          f"ingest processes (shared subscription, batches of {args.batch_size}), "
          f"{m} metrics/event; baseline: binary COPY ceiling {top:,.0f} rows/s (same run)")
    summary = {}
    if args.seconds > 0:
        summary = _report_sustained(args, phases[0], top)
    if args.capacity_seconds > 0:
        summary |= _report_capacity(phases[-args.pairs:])
    published = sum(p["published"] for p in phases)
    exact = events == published and samples == published * m
    print(f"  stored: {events:,} events / {samples:,} samples for {published:,} published "
          f"({'exactly once' if exact else 'MISMATCH'}; unacked at publishers: "
          f"{sum(p['unacked'] for p in phases)}); {note}")
    print(json.dumps(summary | {"ceiling_rows_s": round(top), "exact": exact}))


def _report_capacity(drains: list[dict]) -> dict:
    m = len(SKAB_METRICS)
    ratios = []
    for k, c in enumerate(drains, 1):
        drain = c["window_events"] / c["window_s"] * m
        cpu = _cpu_per_event(c)
        ceiling = sum(c["ceiling"]) / 2
        ratios.append(drain / ceiling)
        print(f"  capacity {k} (backlog of {c['published']:,} events drained): {drain:,.0f} "
              f"samples/s against the COPY ceiling {ceiling:,.0f} rows/s (before/after: "
              f"{c['ceiling'][0]:,.0f} / {c['ceiling'][1]:,.0f}): {ratios[-1]:.1%}; "
              f"per process {c['per_process']}; CPU us/event: ingest {cpu['ingest']:,.0f}, "
              f"PostgreSQL {cpu['postgres']:,.0f}, broker {cpu['broker']:,.0f}")
    median = statistics.median(ratios)
    print(f"  capacity: median {median:.1%} of the same-run ceiling over {len(ratios)} pairs")
    return {"capacity_samples_per_s": [round(c["window_events"] / c["window_s"] * m)
                                       for c in drains],
            "cpu_us_per_event": [_cpu_per_event(c) for c in drains],
            "capacity_ratios": [round(r, 3) for r in ratios],
            "capacity_ratio": round(median, 3)}


def _cpu_per_event(drain: dict) -> dict[str, int]:
    """CPU microseconds per drained event: ingest processes, PostgreSQL backends, broker."""
    cpu, events = drain["cpu_s"], drain["window_events"]
    postgres = sum(v for k, v in cpu.items() if k.startswith("pg"))
    return {name: round(seconds / events * 1e6) for name, seconds in
            (("ingest", cpu["ingest"]), ("postgres", postgres), ("broker", cpu["broker"]))}


def _report_sustained(args, r: dict, top: float) -> dict:
    m = len(SKAB_METRICS)
    rate = r["window_events"] / r["window_s"]
    print(f"  sustained: offered {r['rate'] * m:,.0f} samples/s for {r['window_s']:.0f}+"
          f"{args.warmup:.0f} s -> committed {rate * m:,.0f} samples/s ({rate:,.0f} events/s), "
          f"{rate * m / top:.1%} of the ceiling; per process {r['per_process']}")
    print(f"      publish->commit p50 {r['p50'] * 1000:,.0f} ms, p99 {r['p99'] * 1000:,.0f} ms, "
          f"max {r['max'] * 1000:,.0f} ms; all committed: {r['drained']}")
    return {"sustained_samples_per_s": round(rate * m), "p50_ms": round(r["p50"] * 1000),
            "p99_ms": round(r["p99"] * 1000)}


if __name__ == "__main__":
    main()
