"""Loader for the SKAB (Skoltech Anomaly Benchmark) CSV files, read in place.

The data are not part of this repository. The default location is ``$OPSTWIN_SKAB_DIR`` or
``../shared/datasets/skab`` relative to the repository root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SENSORS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
LABELLED_GROUPS = ("valve1", "valve2", "other")
#: SKAB convention (upstream notebooks): fit on the first 400 rows of each file.
TRAIN_ROWS = 400


@dataclass(frozen=True)
class SkabFile:
    """One SKAB experiment.

    Attributes:
        name: e.g. ``"valve1/3"``.
        group: ``"valve1"``, ``"valve2"`` or ``"other"``.
        ts: ``(n,)`` ``datetime64[s]`` timestamps (testbed local time).
        X: ``(n, 8)`` float64 sensor values in ``SENSORS`` order (units in the dataset README).
        anomaly: ``(n,)`` bool labels (used only for scoring).
    """

    name: str
    group: str
    ts: np.ndarray
    X: np.ndarray
    anomaly: np.ndarray


def default_data_dir() -> Path:
    """``$OPSTWIN_SKAB_DIR`` if set, else ``<repo>/../shared/datasets/skab``."""
    env = os.environ.get("OPSTWIN_SKAB_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "datasets" / "skab").resolve()


def _read_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().strip().split(";")
        lines = [line.rstrip("\n").split(";") for line in fh if line.strip()]
    ts = np.array([row[0] for row in lines], dtype="datetime64[s]")
    values = np.array([row[1:] for row in lines], dtype=np.float64)
    return header, ts, values


def load_file(path: Path, name: str, group: str) -> SkabFile:
    """Read one labelled SKAB CSV (``;``-delimited).

    Raises:
        ValueError: if the header does not have the expected sensor and label columns.
    """
    header, ts, values = _read_csv(path)
    expected = ["datetime", *SENSORS, "anomaly", "changepoint"]
    if header != expected:
        raise ValueError(f"{path}: unexpected header {header}")
    return SkabFile(name, group, ts, values[:, : len(SENSORS)], values[:, len(SENSORS)] > 0.5)


def _sort_key(entry: dict) -> tuple[int, int]:
    group, stem = entry["file"].split("/")
    return LABELLED_GROUPS.index(group), int(Path(stem).stem)


def load_skab(data_dir: str | Path | None = None) -> list[SkabFile]:
    """Load the 34 labelled SKAB files listed in ``manifest.json`` (valve1, valve2, other).

    Raises:
        FileNotFoundError: if ``data_dir`` or its ``manifest.json`` does not exist.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"SKAB manifest not found: {manifest_path}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries = [e for e in manifest["files"] if e.get("has_labels")]
    entries = [e for e in entries if e["file"].split("/")[0] in LABELLED_GROUPS]
    files = []
    for entry in sorted(entries, key=_sort_key):
        group, stem = entry["file"].split("/")
        files.append(load_file(root / entry["file"], f"{group}/{Path(stem).stem}", group))
    return files
