"""Reading the SKAB water-pump testbed data (Skoltech Anomaly Benchmark) in place.

Files are ``;``-delimited CSVs with a ``datetime`` column (testbed local time, 1 s resolution,
treated as UTC here), eight sensor columns and, except ``anomaly-free.csv``, the ``anomaly``
and ``changepoint`` labels. Labels are returned separately so that nothing but a scorer ever
sees them. Source and licence: ``shared/datasets/skab/README.md``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The eight sensors and their units (SKAB README).
METRICS: list[tuple[str, str]] = [
    ("Accelerometer1RMS", "g"), ("Accelerometer2RMS", "g"), ("Current", "A"),
    ("Pressure", "bar"), ("Temperature", "°C"), ("Thermocouple", "°C"), ("Voltage", "V"),
    ("Volume Flow RateRMS", "L/min"),
]
METRIC_NAMES = [name for name, _ in METRICS]
GROUPS = ("anomaly-free", "valve1", "valve2", "other")


@dataclass(frozen=True)
class SkabRun:
    """One SKAB experiment file.

    ``name``: path relative to the data folder, e.g. ``valve1/0.csv``; ``ts``: (n,)
    datetime64[s]; ``X``: (n, 8) float64 in ``METRIC_NAMES`` order and units; ``labels``: (n,)
    bool anomaly labels, or None for the anomaly-free run.
    """

    name: str
    ts: np.ndarray
    X: np.ndarray
    labels: np.ndarray | None

    @property
    def asset_slug(self) -> str:
        return asset_slug(self.name)


def default_data_dir(base_dir: Path) -> Path:
    """``$OPSTWIN_SKAB_DIR`` if set, else ``<base_dir>/../shared/datasets/skab``."""
    env = os.environ.get("OPSTWIN_SKAB_DIR")
    return Path(env) if env else (base_dir.parent / "shared" / "datasets" / "skab").resolve()


def asset_slug(name: str) -> str:
    """Asset slug for a file name: ``valve1/0.csv`` → ``valve1-0``."""
    stem = name.removesuffix(".csv")
    return stem.split("/")[0] if stem.endswith("anomaly-free") else stem.replace("/", "-")


def list_files(root: Path, only: list[str] | None = None) -> list[str]:
    """Relative names of the SKAB CSVs under ``root`` (group order, numeric order).

    ``only`` restricts to the given names (``valve1/0.csv``) or groups (``valve1``). Raises
    ``FileNotFoundError`` if ``root`` holds no SKAB files or a requested name is missing.
    """
    names = []
    for group in GROUPS:
        files = sorted((root / group).glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
        names += [f"{group}/{p.name}" for p in files]
    if not names:
        raise FileNotFoundError(f"no SKAB CSV files under {root}")
    if only:
        missing = [o for o in only if o not in names and o not in GROUPS]
        if missing:
            raise FileNotFoundError(f"not in {root}: {', '.join(missing)}")
        names = [n for n in names if n in only or n.split("/")[0] in only]
    return names


def read_run(root: Path, name: str) -> SkabRun:
    """Read one file. Raises ``ValueError`` if its header lacks a sensor column."""
    with (root / name).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, body = rows[0], [r for r in rows[1:] if r]
    missing = [m for m in METRIC_NAMES if m not in header]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    columns = [header.index(m) for m in METRIC_NAMES]
    ts = np.array([r[header.index("datetime")].replace(" ", "T") for r in body],
                  dtype="datetime64[s]")
    X = np.array([[float(r[c]) for c in columns] for r in body], dtype=np.float64)
    labels = None
    if "anomaly" in header:
        labels = np.array([float(r[header.index("anomaly")]) > 0.5 for r in body])
    return SkabRun(name=name, ts=ts, X=X, labels=labels)


def columns(run: SkabRun) -> dict[str, np.ndarray]:
    """``run`` as {column name: (n,) array}: the eight metrics, plus ``anomaly`` (bool) when
    the file is labelled (for scorers and backtests only)."""
    data = {name: run.X[:, j] for j, name in enumerate(METRIC_NAMES)}
    if run.labels is not None:
        data["anomaly"] = run.labels
    return data
