"""Faults during a load run (prints figures; no assertions on time; exit 1 if a check fails).

One uvicorn process under mixed agent traffic (``benchmarks/_apiload.MIX``) reaches PostgreSQL
through a TCP proxy of this script and uses a Redis and a Mosquitto of its own (never the
machine's shared ones), all on loopback ports from --port (9500-9599). During the load:

1. PostgreSQL cut for --cut seconds (the proxy drops every connection and refuses new ones):
   answers while down must be 503 problem+json naming ``database`` (no 500), ``/ready`` must
   say ``database`` is failing, and service must come back without any manual step.
2. Redis stopped for --redis-down seconds, then started again (rate-limit cache, Celery
   broker): 503 problems naming ``redis``/``broker`` while down, ``/ready`` naming ``redis``.
3. Mosquitto stopped for --mqtt-down seconds: ``/ready`` names ``mqtt``; the HTTP API keeps
   answering (it needs no broker).
Outside the fault windows (plus a short recovery) the error count must be 0.

Then a Celery worker is SIGKILLed mid-simulation (a queued Monte Carlo run, killed once its
progress shows it running): a new worker (with beat) restarts the run once its lease passes,
and the run must end ``succeeded`` with exactly one ``simulation.succeeded`` audit entry.

Run: ``python benchmarks/faults.py`` with DATABASE_URL (a server it may create a scratch
database on). Bounded: about 4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._apiload import (  # noqa: E402
    REPO,
    Server,
    errors_of,
    free_port_in,
    percentile,
    run_load,
    seed,
    server_env,
    table,
    wait_port,
)
from benchmarks._telemetry_bench import bench_database, setup_django  # noqa: E402


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9520)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cut", type=float, default=10.0, help="PostgreSQL outage (s)")
    parser.add_argument("--redis-down", type=float, default=8.0)
    parser.add_argument("--mqtt-down", type=float, default=5.0)
    parser.add_argument(
        "--skip-load", action="store_true", help="only the worker kill (no load, no outages)"
    )
    parser.add_argument(
        "--recovery",
        type=float,
        default=12.0,
        help="seconds after a fault ends in which errors are still counted as the fault's",
    )
    return parser.parse_args()


# --- a TCP proxy we can cut -------------------------------------------------------------------
class CuttableProxy:
    """127.0.0.1:``port`` -> ``target``; ``cut()`` closes every connection and the listener,
    ``restore()`` listens again. Runs its own asyncio loop in a thread."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def start(self) -> CuttableProxy:
        self._call(self._listen())
        return self

    restore = start

    def cut(self) -> None:
        self._call(self._cut())


# --- our own Redis and Mosquitto ----------------------------------------------------------------
class Service:
    """A server process we own (so we may stop and restart it)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv, self.port, self.log, self.proc = argv, port, log, None

    def start(self) -> Service:
        self.proc = subprocess.Popen(self.argv, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def redis_service(port: int, tmp: Path) -> Service:
    return Service(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        port,
        tmp / "redis.log",
    )


def mosquitto_service(port: int, tmp: Path) -> Service:
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return Service([shutil.which("mosquitto"), "-c", str(conf)], port, tmp / "mosquitto.log")


# --- the load with faults -------------------------------------------------------------------------
def poll_ready(base: str, stop: threading.Event, out: list) -> None:
    """GET /ready every 0.5 s: (monotonic time, status, names of the failing checks)."""
    import httpx

    with httpx.Client(base_url=base, timeout=15) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.get("/ready")
                failing = sorted(
                    name for name, check in response.json()["checks"].items() if not check["ok"]
                )
                out.append((sent, response.status_code, failing))
            except Exception as exc:  # noqa: BLE001 - recorded
                out.append((sent, 0, [type(exc).__name__]))
            stop.wait(0.5)


def fault_timeline(args, proxy, redis, mosquitto, windows: dict) -> None:
    """Run the three faults one after the other, recording each window (monotonic s)."""

    def window(name, down, up, seconds):
        time.sleep(8)
        start = time.monotonic()
        down()
        time.sleep(seconds)
        up()
        windows[name] = (start, time.monotonic())

    window("postgresql", proxy.cut, proxy.restore, args.cut)
    window("redis", redis.stop, redis.start, args.redis_down)
    window("mosquitto", mosquitto.stop, mosquitto.start, args.mqtt_down)
    time.sleep(10)


def report_faults(samples, ready, windows, recovery: float) -> bool:
    ok = True
    for name, (start, end) in windows.items():
        inside = [s for s in samples if start <= s.sent < end]
        statuses: dict = {}
        for s in inside:
            key = f"{s.status}{' problem' if s.problem else ''}"
            statuses[key] = statuses.get(key, 0) + 1
        named = sorted(
            {
                json.loads(s.body).get("dependency", "?")
                for s in inside
                if s.status == 503 and s.problem and s.body.startswith("{")
            }
        )
        down_ready = sorted(
            {c for t, st, failing in ready if start <= t < end for c in failing if st == 503}
        )
        back = [t for t, st, _ in ready if t >= end and st == 200]
        first_ok = [s.sent + s.latency for s in samples if s.sent >= end and s.status < 400]
        bad = [s for s in inside if s.status == 500 or s.status == 0]
        print(f"\n{name} down {end - start:.1f} s: {len(inside)} answers while down {statuses}")
        print(
            f"  503 problems name: {named or '-'}; /ready failing while down: "
            f"{down_ready or '-'}; 500s/transport errors: {len(bad)}"
        )
        print(
            f"  after restore: /ready 200 after "
            f"{(back[0] - end) if back else float('nan'):.1f} s, first successful answer "
            f"after {(min(first_ok) - end) if first_ok else float('nan'):.1f} s"
        )
        ok &= not bad and bool(back)
    quiet = [
        s for s in samples if not any(a - 1 <= s.sent < b + recovery for a, b in windows.values())
    ]
    errors = errors_of(quiet)
    print(
        f"\noutside the fault windows (+{recovery:g} s recovery): {len(quiet)} answers, "
        f"errors {len(errors)}, p50 {percentile([s.latency * 1000 for s in quiet], 50):.0f} "
        f"ms, p99 {percentile([s.latency * 1000 for s in quiet], 99):.0f} ms"
    )
    for s in errors[:5]:
        print(f"  {s.endpoint} {s.status}: {s.body[:160]}")
    return ok and not errors


# --- kill a worker mid-simulation -----------------------------------------------------------------
# celery's own entry point, but modules resolve only from this checkout: a virtualenv with
# another checkout installed in editable mode (a git worktree sharing the main checkout's
# venv) would otherwise import app modules this checkout lacks from there.
_CELERY = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
    "if '__editable__' not in getattr(f, '__module__', '')]; "
    "sys.argv[0] = 'celery'; from celery.__main__ import main; main()"
)


def worker(env: dict, tmp: Path, name: str, *, beat: bool = True) -> subprocess.Popen:
    """A Celery worker ``<name>@faults`` on the ``simulate`` queue, concurrency 1, in its own
    process group (so a SIGKILL takes its pool child too); with an embedded beat by default."""
    beat_args = ["-B", "--schedule", str(tmp / f"beat-{name}")] if beat else []
    argv = [
        sys.executable,
        "-c",
        _CELERY,
        "-A",
        "opstwin_site",
        "worker",
        "-Q",
        "simulate",
        "--concurrency",
        "1",
        "--hostname",
        f"{name}@faults",
        *beat_args,
        "--loglevel",
        "WARNING",
    ]
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=(tmp / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_worker_mid_simulation(base: str, token: str, env: dict, tmp: Path) -> bool:
    import httpx

    from simulation.models import SimulationRun
    from twins.models import AuditEntry

    inputs = 100
    body = {
        "inputs": {
            f"x{i}": {"dist": "normal", "params": {"mean": 0, "std": 1}} for i in range(inputs)
        },
        "outputs": {"y": {"terms": {f"x{i}": 1.0 for i in range(inputs)}}},
        "constraints": [{"metric": "y", "op": ">", "limit": 3}],
        "n_samples": 2_000_000,
        "max_samples": 2_000_000,
        "seed": 5,
    }
    first = worker(env, tmp, "first")
    time.sleep(5)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        response = client.post("/sim/run", json=body)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = SimulationRun.objects.get(pk=run_id)
        if run.status == "running" and 0 < run.progress < 1:
            break
        time.sleep(0.1)
    else:
        print(f"the run never showed progress: {run.status} {run.progress}")
        os.killpg(first.pid, signal.SIGKILL)
        return False
    killed_at, progress = time.monotonic(), run.progress
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no warm shutdown
    first.wait()
    print(f"\nworker SIGKILLed mid-simulation (run {run_id} at progress {progress:.2f})")
    second = worker(env, tmp, "second")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run = SimulationRun.objects.get(pk=run_id)
            if run.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    actions = list(
        AuditEntry.objects.filter(resource_type="simulation", resource_id=str(run_id))
        .order_by("id")
        .values_list("action", flat=True)
    )
    print(
        f"  run {run.status} {time.monotonic() - killed_at:.1f} s after the kill "
        f"(lease {env['SIMULATION_MAX_SECONDS']} + 60 s); samples {run.samples_done:,}"
    )
    print(f"  audit: {actions}")
    return run.status == "succeeded" and actions.count("simulation.succeeded") == 1


def faults_under_load(args, base: str, token: str, proxy, redis, mosquitto) -> bool:
    """The three outages during one load run; True when every check passed."""
    run_load(base, token, seconds=3, concurrency=args.concurrency)  # warm up
    windows: dict = {}
    ready: list = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=poll_ready, args=(base, stop, ready)),
        threading.Thread(target=fault_timeline, args=(args, proxy, redis, mosquitto, windows)),
    ]
    for thread in threads:
        thread.start()
    seconds = 3 * 8 + args.cut + args.redis_down + args.mqtt_down + 10
    samples = run_load(base, token, seconds=seconds, concurrency=args.concurrency)
    stop.set()
    for thread in threads:
        thread.join()
    print(
        f"\nfaults under load: {args.concurrency} clients for {seconds:g} s, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print("\n".join(table(samples, seconds)))
    return report_faults(samples, ready, windows, args.recovery) & no_lost_telemetry(samples)


def no_lost_telemetry(samples) -> bool:
    """Every sample an ingest answer acknowledged (201) is stored. Samples stored although
    their answer was a 503 (Redis went down between the commit and the detection enqueue)
    are counted apart: a client's retry of those is answered as duplicates."""
    from benchmarks._apiload import ASSETS, SEED_SECONDS
    from benchmarks._telemetry_bench import SKAB_METRICS
    from telemetry.models import TelemetrySample

    acknowledged = sum(
        json.loads(s.body)["samples"]
        for s in samples
        if s.endpoint == "telemetry/ingest" and s.status == 201
    )
    stored = TelemetrySample.objects.count() - ASSETS * SEED_SECONDS * len(SKAB_METRICS)
    print(
        f"\ntelemetry: {acknowledged} samples acknowledged (201), {stored} stored "
        f"({stored - acknowledged} more: stored, answered 503)"
    )
    return stored >= acknowledged


def main() -> None:
    args = _args()
    with bench_database("faults") as url, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        setup_django(url)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        from django.conf import settings

        settings.CELERY_BROKER_URL = "memory://"  # the seed's detection tasks go nowhere
        token = seed(datetime.now(UTC))
        ports = iter(range(args.port, 9600))
        proxy_port = free_port_in(next(ports), 9599)
        redis_port = free_port_in(proxy_port + 1, 9599)
        mqtt_port = free_port_in(redis_port + 1, 9599)
        web_port = free_port_in(mqtt_port + 1, 9599)
        db = urlsplit(url)
        proxy = CuttableProxy(proxy_port, (db.hostname, db.port or 5432)).start()
        proxied = urlunsplit(db._replace(netloc=f"{db.username}@127.0.0.1:{proxy_port}"))
        redis = redis_service(redis_port, tmp).start()
        mosquitto = mosquitto_service(mqtt_port, tmp).start()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = server_env(
            proxied,
            REDIS_URL=redis_url,
            MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}",
            READY_TIMEOUT_SECONDS="2",
            DB_POOL_TIMEOUT="5",
            SIMULATION_MAX_SECONDS="30",
            CELERY_VISIBILITY_TIMEOUT_SECONDS="70",
            CELERY_TASK_ALWAYS_EAGER="0",
        )
        server = Server(web_port, env, tmp / "web.log").start()
        base = f"http://127.0.0.1:{web_port}"
        ok = True
        try:
            if not args.skip_load:
                ok &= faults_under_load(args, base, token, proxy, redis, mosquitto)
            settings.CELERY_BROKER_URL = redis_url
            ok &= kill_worker_mid_simulation(base, token, env, tmp)
        finally:
            server.stop()
            redis.stop()
            mosquitto.stop()
            proxy.cut()
            for log in tmp.glob("*.log"):  # kept for a look after a failed check
                shutil.copy(log, Path(tempfile.gettempdir()) / f"opstwin-faults-{log.name}")
    print("\nall fault checks passed" if ok else "\nSOME FAULT CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
