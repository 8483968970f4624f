"""The Numenta Anomaly Benchmark (NAB) score of a detector's alert onsets.

Implemented from the description in ``../shared/datasets/nab-dev/README.md`` and checked
against NAB's own ``nab/sweeper.py`` (numenta/NAB, Lavin & Ahmad, "Evaluating Real-time Anomaly
Detection Algorithms - the Numenta Anomaly Benchmark", IEEE ICMLA 2015):

- Probation: the first ``min(floor(0.15 n), 750)`` rows are not scored (neither detections nor
  the windows' parts that fall there; a window wholly inside probation is not counted).
- ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` (NAB's ``scaledSigmoid``; ``-1`` for ``y >= 3``).
- In a window of ``w`` rows ending at row ``r``, a detection at row ``i`` has
  ``y = -(r - i + 1) / w`` (-1 on the window's first row) and earns ``A_TP sigma(y) / sigma(-1)``
  (NAB divides by ``sigma(-1) = 0.98661`` so that a detection on the window's first row earns
  exactly ``A_TP``); only the best (earliest) detection of a window counts, later ones in the
  same window cost nothing.
- A window without detection costs ``-A_FN``.
- A detection outside every window earns ``A_FP sigma(y)`` with
  ``y = |r_prev - i| / (w_prev - 1)`` measured from the preceding window (end ``r_prev``, width
  ``w_prev``); before any window ``y = 3``, i.e. ``-A_FP``.
- Normalised: ``100 (raw - null) / (perfect - null)`` where ``null`` never fires
  (``-A_FN`` per scored window) and ``perfect`` fires on every window's first scored row.

Timestamps are matched exactly (NAB's ``list.index``: a repeated timestamp resolves to its
first row).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # NAB: probationPercent * 5000
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@dataclass(frozen=True)
class CostMatrix:
    """One NAB application profile: weights of true positives, false negatives, positives."""

    tp: float
    fn: float
    fp: float


@dataclass
class FileScore:
    """Raw NAB score of one file and its parts (all in profile weight units).

    ``raw = tp + fp + fn`` (fn and usually fp are negative); ``null``/``perfect`` are the raw
    scores of the never-firing and the window-start detectors on the same file; ``n_windows``
    counts scored windows, ``n_detections`` scored (post-probation) alerts, ``n_fp`` those
    outside every window.
    """

    raw: float
    tp: float
    fp: float
    fn: float
    null: float
    perfect: float
    n_windows: int
    n_detected: int
    n_detections: int
    n_fp: int


def load_profiles(path: str | Path) -> dict[str, CostMatrix]:
    """Read NAB's ``profiles.json`` → {profile name: CostMatrix}."""
    data = json.loads(Path(path).read_text())
    return {
        name: CostMatrix(tp=float(c["tpWeight"]), fn=float(c["fnWeight"]), fp=float(c["fpWeight"]))
        for name, body in data.items()
        for c in [body["CostMatrix"]]
    }


def probation_rows(n: int) -> int:
    """Rows at the start of an ``n``-row file that are not scored: min(floor(0.15 n), 750)."""
    return min(math.floor(PROBATION_FRACTION * n), PROBATION_MAX_ROWS)


def scaled_sigmoid(y: float) -> float:
    """NAB's ``2 / (1 + e^{5y}) - 1``, and exactly -1 for ``y >= 3``."""
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def window_rows(ts: np.ndarray, windows: list[tuple[np.datetime64, np.datetime64]]) -> list:
    """Row spans ``(first, last)`` (inclusive) of labelled windows on timestamps ``ts``.

    Raises:
        ValueError: if a window edge is not one of the file's timestamps.
    """
    index: dict[np.datetime64, int] = {}
    for i, t in enumerate(ts.tolist()):
        index.setdefault(t, i)
    spans = []
    for start, end in windows:
        try:
            spans.append((index[start.item()], index[end.item()]))
        except KeyError as exc:
            raise ValueError(f"window edge {exc.args[0]} is not a timestamp of the file") from exc
    return sorted(spans)


def _row_scores(n: int, spans: list[tuple[int, int]], cost: CostMatrix) -> tuple[np.ndarray, ...]:
    """Per-row sweep score ``(n,)`` and window id ``(n,)`` (-1 outside, -2 in probation)."""
    max_tp = scaled_sigmoid(-1.0)
    score = np.empty(n)
    window = np.full(n, -1, dtype=np.int64)
    prev_end, prev_width = None, None
    spans = list(spans)
    k = 0
    for i in range(n):
        if k < len(spans) and spans[k][0] <= i <= spans[k][1]:
            first, last = spans[k]
            width = last - first + 1
            score[i] = scaled_sigmoid(-(last - i + 1) / width) * cost.tp / max_tp
            window[i] = k
            if i == last:
                prev_end, prev_width, k = last, width, k + 1
            continue
        y = 3.0 if prev_end is None else abs(prev_end - i) / max(prev_width - 1, 1)
        score[i] = scaled_sigmoid(y) * cost.fp
    window[: probation_rows(n)] = -2
    return score, window


def score_file(
    n: int, spans: list[tuple[int, int]], alerts: np.ndarray, cost: CostMatrix
) -> FileScore:
    """NAB raw score of alert rows on one file.

    Args:
        n: rows in the file.
        spans: labelled windows as inclusive row spans, time-ordered, non-overlapping.
        alerts: ``(k,)`` int row indices of alert onsets (any order; duplicates allowed).
        cost: the profile's weights.

    Returns:
        :class:`FileScore` with the raw, null and perfect scores of the file.
    """
    score, window = _row_scores(n, spans, cost)
    scored = sorted({int(a) for a in np.asarray(alerts).ravel() if window[int(a)] != -2})
    windows = sorted({int(w) for w in window if w >= 0})
    best: dict[int, float] = {}
    fp, n_fp = 0.0, 0
    for i in scored:
        w = int(window[i])
        if w < 0:
            fp += score[i]
            n_fp += 1
        else:
            best[w] = max(best.get(w, -math.inf), score[i])
    tp = sum(best.values())
    fn = -cost.fn * (len(windows) - len(best))
    first_rows = [int(np.flatnonzero(window == w)[0]) for w in windows]
    perfect = float(sum(score[r] for r in first_rows))
    return FileScore(
        raw=tp + fp + fn, tp=tp, fp=fp, fn=fn, null=-cost.fn * len(windows), perfect=perfect,
        n_windows=len(windows), n_detected=len(best), n_detections=len(scored), n_fp=n_fp,
    )


def normalised(scores: list[FileScore]) -> float:
    """``100 (raw - null) / (perfect - null)`` summed over files; NaN when there is no window."""
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A NAB data file ``timestamp,value`` → ``(ts (n,) datetime64[s] UTC, values (n,) float64)``.

    Raises:
        ValueError: on a malformed row.
    """
    lines = Path(path).read_text().splitlines()[1:]
    stamps, values = [], []
    for line in lines:
        if not line.strip():
            continue
        stamp, value = line.rsplit(",", 1)
        stamps.append(stamp.strip().replace(" ", "T"))
        values.append(float(value))
    return np.array(stamps, dtype="datetime64[s]"), np.array(values, dtype=np.float64)


def read_windows(path: str | Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """NAB's ``combined_windows.json`` → {relative file name: [(start, end) datetime64[s]]}.

    The ``.000000`` fractional suffix of NAB's label timestamps is dropped.
    """
    def stamp(s: str) -> np.datetime64:
        return np.datetime64(s.split(".")[0].replace(" ", "T"), "s")

    data = json.loads(Path(path).read_text())
    return {name: [(stamp(a), stamp(b)) for a, b in spans] for name, spans in data.items()}
