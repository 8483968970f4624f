"""Shared plumbing of the telemetry benchmarks (ingest_ceiling, ingest_e2e, queries).

Each benchmark runs in a database of its own, created on ``DATABASE_URL``'s server (or the
embedded PostgreSQL when it is unset), migrated, and dropped at the end (also on Ctrl-C).
Rows for COPY are encoded to PostgreSQL's binary COPY format with numpy before any clock
starts, so the ceiling measures the server, not Python.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)
SKAB_METRICS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
                "Thermocouple", "Voltage", "Volume Flow RateRMS"]


def server_url() -> str:
    """``DATABASE_URL``, else the embedded PostgreSQL the project falls back to (pgserver)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from opstwin_site.embedded import embedded_database_url

    return embedded_database_url(Path(os.environ.get("OPSTWIN_DATA_DIR", REPO / ".opstwin")))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", path=f"/{name}"))


def _admin(url: str):
    import psycopg

    return psycopg.connect(with_database(url, "postgres"), autocommit=True)


@contextlib.contextmanager
def bench_database(kind: str, *, migrate: bool = True) -> Iterator[str]:
    """Create ``opstwin_bench_<kind>_<pid>``, migrate it, yield its URL, then drop it."""
    base = server_url()
    name = f"opstwin_bench_{kind}_{os.getpid()}"
    with _admin(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(base, name)
    try:
        if migrate:
            env = os.environ | {"DATABASE_URL": url}
            subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "-v0"], env=env,
                           cwd=REPO, check=True)
        yield url
    finally:
        with _admin(base) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", [name])
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def setup_django(url: str) -> None:
    """Configure Django against ``url`` (call before importing models)."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")
    import django

    django.setup()


def make_assets(twin_slug: str, n: int) -> list:
    """A twin with ``n`` pump assets declaring the eight SKAB metrics."""
    from twins.models import Asset, Twin

    twin = Twin.objects.create(slug=twin_slug, name=twin_slug)
    return [Asset.objects.create(twin=twin, slug=f"pump-{i}", name=f"Pump {i}", kind="pump",
                                 metrics=[{"name": m, "unit": ""} for m in SKAB_METRICS])
            for i in range(n)]


def encode_samples(ts_us: np.ndarray, asset_ids: np.ndarray, metrics: list[str],
                   metric_index: np.ndarray, values: np.ndarray) -> bytes:
    """Binary COPY body (header to trailer) for rows (ts, asset_id, metric, value).

    ``ts_us``: (n,) int64 microseconds since 2000-01-01 UTC; ``asset_ids``: (n,) int64;
    ``metric_index``: (n,) indices into ``metrics``; ``values``: (n,) float64. Rows keep their
    order within each metric; metrics are written one after the other.
    """
    chunks = [COPY_HEADER]
    for k, name in enumerate(metrics):
        mask = metric_index == k
        text = name.encode()
        dtype = np.dtype([("fields", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_a", ">i4"),
                          ("a", ">i8"), ("l_m", ">i4"), ("m", f"S{len(text)}"), ("l_v", ">i4"),
                          ("v", ">f8")])
        block = np.zeros(int(mask.sum()), dtype=dtype)
        block["fields"], block["l_ts"], block["l_a"], block["l_v"] = 4, 8, 8, 8
        block["l_m"], block["m"] = len(text), text
        block["ts"], block["a"], block["v"] = ts_us[mask], asset_ids[mask], values[mask]
        chunks.append(block.tobytes())
    chunks.append(COPY_TRAILER)
    return b"".join(chunks)


def copy_binary(conn, body: bytes, table: str = "telemetry_telemetrysample") -> None:
    """Send one pre-encoded binary COPY body (``conn`` is a psycopg connection)."""
    with conn.cursor() as cur, cur.copy(
            f"COPY {table} (ts, asset_id, metric, value) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(body)


def skab_like_values(n: int, seed: int = 0) -> np.ndarray:
    """(n, 8) float64 around the SKAB testbed's normal operating point."""
    rng = np.random.default_rng(seed)
    mean = np.array([0.21, 0.27, 2.5, 1.0, 89.0, 28.6, 229.0, 125.0])
    return mean + rng.normal(0, 1, (n, 8)) * (mean * 0.01 + 0.01)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result
