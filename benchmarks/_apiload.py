"""Shared plumbing of the API load and fault runs (``api_load.py``, ``faults.py``).

- ``seed``: a twin ``plant`` with ``ASSETS`` SKAB-shaped pumps, the last ``SEED_SECONDS`` of
  1 Hz telemetry on each (through the real ingest service), and an agent (role ``agent`` on
  every twin) with a read+write bearer token.
- ``Server``: one uvicorn process on a loopback port against a given database URL.
- ``run_load``: ``concurrency`` asyncio clients (httpx), each looping over the weighted
  ``MIX`` of agent requests until a deadline; every answer is recorded (endpoint, status,
  content type, latency, time), so callers can slice the run (e.g. during a fault).
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._telemetry_bench import SKAB_METRICS, skab_like_values  # noqa: E402
from opstwin_site import webserver  # noqa: E402

ASSETS = 4
SEED_SECONDS = 1800
TWIN = "plant"


# --- seed -------------------------------------------------------------------------------------
def seed(end: datetime) -> str:
    """Twin, assets, telemetry up to ``end`` and an agent token (returned, plaintext).

    Call after ``setup_django``; detection tasks go to Celery's in-memory transport (dropped),
    so the seed measures nothing and leaves no queue behind."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from aiw.services import issue_token
    from benchmarks._telemetry_bench import make_assets
    from telemetry.services import RawPayload, ingest_batch
    from twins.roles import grant_all_twins

    assets = make_assets(TWIN, ASSETS)
    start = end - timedelta(seconds=SEED_SECONDS)
    for k, asset in enumerate(assets):
        values = skab_like_values(SEED_SECONDS, seed=k)
        payloads = [
            RawPayload(body=_event(asset.slug, start + timedelta(seconds=i), row))
            for i, row in enumerate(values)
        ]
        for i in range(0, len(payloads), 600):
            report = ingest_batch(payloads[i : i + 600], source="replay")
            assert not report.rejected, report.rejected[:3]
    user = get_user_model().objects.create_user("load-agent")
    user.groups.add(Group.objects.get(name="agent"))
    grant_all_twins(user, "agent")
    return issue_token(user=user, name="load", scopes=["read", "write"])[1]


def _event(asset: str, ts: datetime, row: np.ndarray) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "twin_id": TWIN,
        "asset_id": asset,
        "ts": ts.isoformat(),
        "metrics": dict(zip(SKAB_METRICS, map(float, row), strict=True)),
    }


# --- the server ---------------------------------------------------------------------------------
def free_port_in(first: int, last: int) -> int:
    """The first port in [first, last] nothing listens on (our range: 9500-9599)."""
    for port in range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


@dataclass
class Server:
    """A uvicorn process (``opstwin_site.webserver``) serving OpsTwin on 127.0.0.1:``port``."""

    port: int
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            webserver.command("127.0.0.1", self.port),
            cwd=REPO,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(database_url: str, **extra: str) -> dict:
    """The web's environment: no rate limit in the way, quiet logs, plain HTTP."""
    return (
        os.environ
        | {
            "DATABASE_URL": database_url,
            "AIW_TOKEN_RATE": "10000000/min",
            "LOG_LEVEL": "WARNING",
            "SECURE_SSL_REDIRECT": "0",
            "PYTHONPATH": str(REPO),
        }
        | extra
    )


# --- the load -----------------------------------------------------------------------------------
@dataclass
class Sample:
    """One answer: endpoint name, HTTP status (0: transport error), problem+json or not,
    latency (s) and when it was sent (monotonic s)."""

    endpoint: str
    status: int
    problem: bool
    latency: float
    sent: float
    body: str = ""


@dataclass
class Agent:
    """What one simulated agent remembers between requests (its feed cursor)."""

    token: str
    cursor: str = "0"
    rng: random.Random = field(default_factory=random.Random)


def _now() -> datetime:
    return datetime.now(UTC)


def _latest(agent: Agent):
    asset = f"pump-{agent.rng.randrange(ASSETS)}"
    return "GET", "/telemetry/latest", {"params": {"twin": TWIN, "asset": asset}}


def _query(agent: Agent):
    end = _now()
    return (
        "GET",
        "/telemetry/query",
        {
            "params": {
                "twin": TWIN,
                "asset": f"pump-{agent.rng.randrange(ASSETS)}",
                "metric": "Pressure,Current",
                "start": (end - timedelta(minutes=10)).isoformat(),
                "end": end.isoformat(),
                "limit": 500,
            }
        },
    )


def _aggregate(agent: Agent):
    end = _now()
    return (
        "GET",
        "/telemetry/aggregate",
        {
            "params": {
                "twin": TWIN,
                "metric": "Pressure",
                "start": (end - timedelta(hours=1)).isoformat(),
                "end": end.isoformat(),
                "bucket": "1m",
                "fn": "avg,max",
            }
        },
    )


def _diff(agent: Agent):
    return "GET", "/diff", {"params": {"since": agent.cursor, "limit": 100}}


def _snapshot(agent: Agent):
    return "GET", "/snapshot", {}


def _manifest(agent: Agent):
    return "GET", "/.well-known/aiw-manifest.json", {}


def _ingest(agent: Agent):
    asset = f"pump-{agent.rng.randrange(ASSETS)}"
    now = _now()
    rows = skab_like_values(10, seed=agent.rng.randrange(1 << 30))
    body = [
        _event(asset, now - timedelta(milliseconds=100 * (10 - i)), row)
        for i, row in enumerate(rows)
    ]
    return "POST", "/telemetry/ingest", {"json": body}


def _simulate(agent: Agent):
    body = {
        "inputs": {
            "flow": {"dist": "normal", "params": {"mean": 10, "std": 1}},
            "head": {"dist": "uniform", "params": {"low": 1, "high": 2}},
        },
        "outputs": {"power": {"terms": {"flow": 0.5, "head": 2.0}, "intercept": 0.1}},
        "constraints": [{"metric": "power", "op": ">", "limit": 8.5}],
        "n_samples": 2000,
        "seed": agent.rng.randrange(1 << 30),
    }
    return "POST", "/sim/run", {"json": body}


# endpoint name -> (weight, request builder): an agent mostly reads the plant's state and
# recent telemetry, follows the change feed, sometimes writes telemetry and runs a what-if.
MIX = {
    "telemetry/latest": (30, _latest),
    "telemetry/query": (15, _query),
    "telemetry/aggregate": (10, _aggregate),
    "diff": (15, _diff),
    "snapshot": (5, _snapshot),
    "manifest": (5, _manifest),
    "telemetry/ingest": (15, _ingest),
    "sim/run": (5, _simulate),
}
HEALTH_ONLY = {"health": (1, lambda agent: ("GET", "/health", {}))}


async def _client_loop(
    client, agent: Agent, mix: dict, deadline: float, samples: list[Sample]
) -> None:
    names = list(mix)
    weights = [mix[name][0] for name in names]
    while (sent := time.monotonic()) < deadline:
        name = agent.rng.choices(names, weights)[0]
        method, path, kwargs = mix[name][1](agent)
        try:
            response = await client.request(method, path, **kwargs)
            status, body = response.status_code, response.text
            problem = response.headers.get("content-type", "").startswith(
                "application/problem+json"
            )
        except Exception as exc:  # noqa: BLE001 - a transport error is a recorded answer
            status, body, problem = 0, f"{type(exc).__name__}: {exc}", False
        samples.append(Sample(name, status, problem, time.monotonic() - sent, sent, body[:300]))
        if name == "diff" and status == 200:
            agent.cursor = json.loads(body).get("next_cursor") or agent.cursor


async def _run(
    base_url: str, token: str, mix: dict, concurrency: int, seconds: float, timeout: float
) -> list[Sample]:
    import httpx

    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _client_loop(client, Agent(token, rng=random.Random(k)), mix, deadline, samples)
                for k in range(concurrency)
            )
        )
    return samples


def run_load(
    base_url: str,
    token: str,
    *,
    mix: dict = MIX,
    concurrency: int = 16,
    seconds: float = 20.0,
    timeout: float = 30.0,
) -> list[Sample]:
    """``concurrency`` clients looping over ``mix`` for ``seconds``; every answer recorded."""
    return asyncio.run(_run(base_url, token, mix, concurrency, seconds, timeout))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation, numpy's default)."""
    return float(np.percentile(values, q)) if values else float("nan")


def table(samples: list[Sample], seconds: float) -> list[str]:
    """One line per endpoint: count, req/s, p50/p95/p99 (ms), errors (status 0 or >= 500,
    and any 4xx, which this traffic never causes)."""
    lines = [
        f"{'endpoint':22} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}"
    ]
    names = sorted({s.endpoint for s in samples})
    for name in [*names, "ALL"]:
        rows = [s for s in samples if name in (s.endpoint, "ALL")]
        latencies = [s.latency * 1000 for s in rows]
        errors = sum(1 for s in rows if s.status == 0 or s.status >= 400)
        lines.append(
            f"{name:22} {len(rows):>6} {len(rows) / seconds:>7.1f} "
            f"{percentile(latencies, 50):>8.1f} {percentile(latencies, 95):>8.1f} "
            f"{percentile(latencies, 99):>8.1f} {errors:>6}"
        )
    return lines


def errors_of(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.status == 0 or s.status >= 400]
