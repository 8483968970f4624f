"""Score OpsTwin's detectors on the NAB development split (univariate, minute-to-hour cadence).

Usage::

    python benchmarks/nab_eval.py [--data PATH] [--no-honest] [--no-throughput]

Protocol: every file of ``../shared/datasets/nab-dev`` is replayed causally through a fresh
detector; calibrated detectors (MAD, EWMA, CUSUM) are fitted on the file's probation rows
(the first 15 %, at most 750, which NAB does not score and lets detectors learn from). Each
detector's flags become alert onsets through the same :class:`OnsetFilter` (hysteresis and a
refractory period in sampling intervals), except the baseline, whose onsets are the first point
of every run of flagged points. Onsets are scored with NAB's three profiles by
``telemetry.scoring.nab`` (the labels are read only there). ``artificialNoAnomaly`` has no
windows to normalise by: its column is the largest number of alerts on one of its files.

``--honest`` (default on) adds a leave-one-folder-out estimate for the generic default: for each
folder with windows, the configuration that scores best on the *other* folders over a small grid
is scored on the held-out folder; the held-out raw scores are normalised together.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":  # time on one core: single-threaded BLAS, set before numpy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from benchmarks.skab_eval import PUMP_DEFAULT  # noqa: E402
from telemetry.detectors import build_detector  # noqa: E402
from telemetry.detectors.streaming import (  # noqa: E402
    OnsetFilter,
    OnsetState,
    SmoothedZScore,
)
from telemetry.scoring import nab  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_WINDOWS = "artificialNoAnomaly"
#: The generic default shipped for non-pump assets (telemetry/migrations/0006).
GENERIC_DEFAULT: dict[str, Any] = dict(SmoothedZScore.defaults)
#: (label, detector name, params, onset rule): "filter" = OnsetFilter of the generic default,
#: "runs" = first point of each run of flagged points.
CONFIGS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("baseline: rolling z-score (window 60, |z|>=3, one alert per run)", "zscore", {}, "runs"),
    ("zscore (seed, window 60, |z|>=3)", "zscore", {}, "filter"),
    ("mad (defaults)", "mad", {}, "filter"),
    ("ewma (pump default λ 0.7, L 3, median 3)", "ewma", PUMP_DEFAULT, "filter"),
    ("cusum (defaults)", "cusum", {}, "filter"),
    ("smoothed_z: OpsTwin generic default", "smoothed_z", {}, "filter"),
)
HONEST_GRID = {"threshold": [4.0, 5.0, 6.0], "smooth_points": [1, 2, 4, 8], "cooldown": [100, 200]}


@dataclass
class NabFile:
    """One NAB file: ``name`` (``folder/file.csv``), ``ts`` ``(n,)`` datetime64[s], ``values``
    ``(n,)`` float64, ``spans`` labelled windows as inclusive row spans."""

    name: str
    ts: np.ndarray
    values: np.ndarray
    spans: list[tuple[int, int]]

    @property
    def folder(self) -> str:
        return self.name.split("/")[0]


def default_data_dir() -> Path:
    """``$OPSTWIN_NAB_DIR`` if set, else ``<repo>/../shared/datasets/nab-dev``."""
    return Path(os.environ.get("OPSTWIN_NAB_DIR", REPO_ROOT.parent / "shared/datasets/nab-dev"))


def load_nab(root: Path) -> list[NabFile]:
    """Every CSV under ``root/data`` with its windows from ``labels/combined_windows.json``.

    Raises:
        FileNotFoundError: if ``root`` holds no NAB files.
    """
    windows = nab.read_windows(root / "labels/combined_windows.json")
    files = []
    for path in sorted((root / "data").glob("*/*.csv")):
        name = path.relative_to(root / "data").as_posix()
        ts, values = nab.read_csv(path)
        files.append(NabFile(name, ts, values, nab.window_rows(ts, windows.get(name, []))))
    if not files:
        raise FileNotFoundError(f"no NAB files under {root}/data")
    return files


def onsets(name: str, params: dict[str, Any], rule: str, values: np.ndarray) -> np.ndarray:
    """Alert onset rows of detector ``name`` on one univariate file, causally.

    Calibrated detectors are fitted on the probation rows; the statistic of every row is then
    computed once on the whole file (exactly what row-by-row scoring with history gives, see
    ``BaseDetector.history_length``). Returns ``(k,)`` int row indices.
    """
    det = build_detector(name, params)
    fit_rows = max(nab.probation_rows(len(values)), 3)
    if det.requires_fit:
        det.fit(values[:fit_rows, None])
    out = det.score(values[:, None])
    if rule == "runs":
        f = out.flags
        return np.flatnonzero(f & ~np.concatenate([[False], f[:-1]]))
    flt = det.onset_filter() if isinstance(det, SmoothedZScore) else _default_filter()
    found, _ = flt.update(out.statistic / out.threshold, OnsetState())
    return np.flatnonzero(found.onset)


def _default_filter() -> OnsetFilter:
    p = SmoothedZScore.defaults
    return OnsetFilter(p["release"], p["rearm"], p["cooldown"])


def detect_all(files: list[NabFile], name: str, params: dict, rule: str) -> list[np.ndarray]:
    """Onsets of one configuration on every file."""
    return [onsets(name, params, rule, f.values) for f in files]


def score_all(files: list[NabFile], alerts: list[np.ndarray], cost: nab.CostMatrix) -> dict:
    """{folder: normalised score (alert count for NO_WINDOWS)} plus ``"TOTAL"``, ``"raw"``."""
    per: dict[str, list[nab.FileScore]] = {}
    for f, a in zip(files, alerts, strict=True):
        per.setdefault(f.folder, []).append(nab.score_file(len(f.values), f.spans, a, cost))
    out: dict[str, float] = {}
    for folder, scores in per.items():
        if folder == NO_WINDOWS:
            out[folder] = float(max(s.n_detections for s in scores))
        else:
            out[folder] = nab.normalised(scores)
    everything = [s for scores in per.values() for s in scores]
    out["TOTAL"] = nab.normalised(everything)
    out["raw"] = sum(s.raw for s in everything)
    return out


def _row(label: str, res: dict, folders: list[str]) -> str:
    cells = [f"{res[f]:8.1f}" if f != NO_WINDOWS else f"{res[f]:8.0f}" for f in folders]
    return f"{label[:58]:58s} " + " ".join(cells) + f" {res['TOTAL']:8.1f}"


def evaluate(files: list[NabFile], profiles: dict[str, nab.CostMatrix]) -> None:
    """Print the per-folder and total table of every configuration and profile."""
    folders = sorted({f.folder for f in files})
    header = f"{'detector':58s} " + " ".join(f"{f[:8]:>8s}" for f in folders) + "    TOTAL"
    results = []
    for label, name, params, rule in CONFIGS:
        t0 = time.perf_counter()
        alerts = detect_all(files, name, params, rule)
        n = sum(len(a) for a in alerts)
        print(
            f"  [{label[:40]}] {n} alerts on {len(files)} files, {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        results.append((label, alerts))
    for profile, cost in profiles.items():
        print(
            f"\nNAB {profile} (A_TP {cost.tp}, A_FN {cost.fn}, A_FP {cost.fp});"
            f" {NO_WINDOWS}: max alerts per file"
        )
        print(header)
        for label, alerts in results:
            print(_row(label, score_all(files, alerts, cost), folders))


def honest(files: list[NabFile], cost: nab.CostMatrix) -> None:
    """Leave-one-folder-out estimate of the generic default's standard score (see module doc)."""
    keys = list(HONEST_GRID)
    grid = [dict(zip(keys, v, strict=True)) for v in itertools.product(*HONEST_GRID.values())]
    print(f"\nleave-one-folder-out over {len(grid)} configurations of smoothed_z:")
    scores = []
    for i, params in enumerate(grid):
        alerts = detect_all(files, "smoothed_z", params, "filter")
        scores.append(
            [
                nab.score_file(len(f.values), f.spans, a, cost)
                for f, a in zip(files, alerts, strict=True)
            ]
        )
        print(f"  [{i + 1}/{len(grid)}] {params}", flush=True)
    held_out: list[nab.FileScore] = []
    for folder in sorted({f.folder for f in files} - {NO_WINDOWS}):
        inside = [k for k, f in enumerate(files) if f.folder == folder]
        other = [k for k, f in enumerate(files) if f.folder != folder]
        best = max(range(len(grid)), key=lambda g: nab.normalised([scores[g][k] for k in other]))
        part = [scores[best][k] for k in inside]
        held_out += part
        print(f"  held out {folder:22s} chosen {grid[best]} -> {nab.normalised(part):6.1f}")
    print(f"  leave-one-folder-out total (standard): {nab.normalised(held_out):.1f}")


def _stream(files: list[NabFile], name: str, params: dict, batch: int) -> tuple[int, float]:
    """Points and seconds to stream every file through ``name`` in ``batch``-row calls of
    ``score_stream`` (history rows + the carried state, as ``detect_anomalies`` does), then
    the onset filter carried across calls."""
    points, seconds = 0, 0.0
    for f in files:
        X = f.values[:, None]
        det = build_detector(name, params)
        fit_rows = max(nab.probation_rows(len(X)), 3)
        if det.requires_fit:
            det.fit(X[:fit_rows])
        flt = det.onset_filter() if isinstance(det, SmoothedZScore) else _default_filter()
        hist, carry, state = det.history_length, None, OnsetState()
        t0 = time.perf_counter()
        for b in range(0, len(X), batch):
            history = X[max(0, b - hist) : b] if b else None
            out, carry = det.score_stream(X[b : b + batch], history=history, carry=carry)
            _, state = flt.update(out.statistic / out.threshold, state)
        seconds += time.perf_counter() - t0
        points += len(X)
    return points, seconds


def _whole_files(files: list[NabFile], name: str, params: dict) -> tuple[int, float]:
    """Points and seconds of the same detector scoring each whole file in one ``score`` call
    (no streaming, no onset filter): the same-run ceiling of the streaming path."""
    points, seconds = 0, 0.0
    for f in files:
        X = f.values[:, None]
        det = build_detector(name, params)
        if det.requires_fit:
            det.fit(X[: max(nab.probation_rows(len(X)), 3)])
        t0 = time.perf_counter()
        det.score(X)
        seconds += time.perf_counter() - t0
        points += len(X)
    return points, seconds


def throughput(files: list[NabFile], batch: int = 500) -> None:
    """Points/s on one core of the streaming path (``batch``-row calls with history and the
    carried state, onset filter) for the generic default and the pump default, next to the
    same detector scoring whole files in one call, measured in the same run."""
    print(
        f"\nthroughput, one core, {batch}-row calls with history and carried state"
        " (ceiling: the same detector on whole files in one call):"
    )
    for label, name, params in (
        ("smoothed_z (generic default)", "smoothed_z", {}),
        ("ewma (pump default)", "ewma", PUMP_DEFAULT),
    ):
        points, seconds = _stream(files, name, params, batch)
        c_points, c_seconds = _whole_files(files, name, params)
        rate, ceiling = points / seconds, c_points / c_seconds
        print(
            f"  {label:30s} {rate:12,.0f} points/s streamed, ceiling {ceiling:12,.0f}"
            f" points/s, ratio {rate / ceiling:.2f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir(), help="nab-dev folder")
    ap.add_argument("--no-honest", action="store_true", help="skip leave-one-folder-out")
    ap.add_argument("--no-throughput", action="store_true", help="skip the timing part")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:
        files = load_nab(args.data)
    except FileNotFoundError as exc:
        print(f"error: {exc} (use --data or OPSTWIN_NAB_DIR)", file=sys.stderr)
        return 2
    profiles = nab.load_profiles(args.data / "labels/profiles.json")
    print(
        f"NAB dev: {len(files)} files, {sum(len(f.values) for f in files)} rows, "
        f"{sum(len(f.spans) for f in files)} windows, from {args.data}"
    )
    evaluate(files, profiles)
    if not args.no_honest:
        honest(files, profiles["standard"])
    if not args.no_throughput:
        throughput(files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
