"""Ingest process status: counters and lag histograms, shared through small JSON files.

Each ``ingest_mqtt`` process rewrites ``<INGEST_STATUS_DIR>/<name>.json`` about once a second
(atomically: write, then rename). ``GET /telemetry/ingest/status`` and the benchmarks read and
merge them. Where several hosts run ingest, mount the directory on a shared volume.

Lags are kept in ``LagHistogram``s: log-spaced buckets (40 per decade from 1 ms, so a quantile
is within about 3 % of the true value), mergeable across processes by adding counts.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PER_DECADE = 40
FLOOR_S = 1e-3
TOP_INDEX = 8 * PER_DECADE  # 1 ms .. 100,000 s; anything above lands in the top bucket


@dataclass
class LagHistogram:
    """Counts of lags (seconds) in log-spaced buckets; ``max_s`` is exact."""

    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        """Count one lag; negative lags (clock skew) count as the floor bucket."""
        index = 0 if seconds <= FLOOR_S else min(
            int(math.log10(seconds / FLOOR_S) * PER_DECADE), TOP_INDEX)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.max_s = max(self.max_s, seconds)

    def add_all(self, seconds: list[float]) -> None:
        """``add`` each of ``seconds`` (a batch's lags), with one numpy pass for the buckets."""
        if not seconds:
            return
        lags = np.asarray(seconds, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.log10(np.maximum(lags, FLOOR_S) / FLOOR_S) * PER_DECADE
        # Same bucket as ``add``: truncation of a non-negative number is its floor.
        indices = np.where(lags <= FLOOR_S, 0, np.minimum(raw.astype(np.int64), TOP_INDEX))
        values, counts = np.unique(indices, return_counts=True)
        for index, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.counts[index] = self.counts.get(index, 0) + count
        self.n += len(lags)
        self.max_s = max(self.max_s, float(lags.max()))

    def merge(self, other: LagHistogram) -> None:
        """Add ``other``'s counts to this histogram."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.n += other.n
        self.max_s = max(self.max_s, other.max_s)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in seconds (bucket's geometric middle), None when empty."""
        if not self.n:
            return None
        rank, seen = q * self.n, 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(FLOOR_S * 10 ** ((index + 0.5) / PER_DECADE), self.max_s)
        return self.max_s

    def to_dict(self) -> dict:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "n": self.n,
                "max_s": self.max_s, "p50_s": self.quantile(0.5), "p99_s": self.quantile(0.99)}

    @classmethod
    def from_dict(cls, doc: dict) -> LagHistogram:
        return cls({int(k): int(v) for k, v in doc.get("counts", {}).items()},
                   int(doc.get("n", 0)), float(doc.get("max_s", 0.0)))


def write_status(path: Path, status: dict) -> None:
    """Atomically replace ``path`` with ``status`` as JSON (creates the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, default=str))
    os.replace(tmp, path)


def read_status(path: Path) -> dict | None:
    """The status document at ``path``; None when it is missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_statuses(directory: Path, *, stale_after_s: float = 10.0) -> list[dict]:
    """Every status file in ``directory``, each with ``stale`` set when not updated lately."""
    statuses = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        doc["stale"] = time.time() - float(doc.get("updated_at", 0)) > stale_after_s
        statuses.append(doc)
    return statuses


def merged_lag(statuses: list[dict], key: str) -> LagHistogram:
    """The ``key`` histograms (e.g. ``"event_lag"``) of several statuses added together."""
    total = LagHistogram()
    for status in statuses:
        total.merge(LagHistogram.from_dict(status.get(key, {})))
    return total
