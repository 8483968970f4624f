"""Grouping of flagged points into episodes (one alarm per run, not one per point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Episode:
    """A run of flagged points.

    Attributes:
        start: index of the first flagged point (inclusive).
        end: index of the last flagged point (inclusive).
        peak: index of the highest ``score`` inside the episode (``start`` without scores).
        n_points: number of flagged points in the episode (smaller than
            ``end - start + 1`` when gaps were bridged by ``max_gap``).
        start_ts: ``ts[start]`` when timestamps were given, else None.
        end_ts: ``ts[end]`` when timestamps were given, else None.
        peak_score: ``score[peak]`` when scores were given, else None.
    """

    start: int
    end: int
    peak: int
    n_points: int
    start_ts: Any = None
    end_ts: Any = None
    peak_score: float | None = None

    @property
    def length(self) -> int:
        """Points spanned, gaps included: ``end - start + 1``."""
        return self.end - self.start + 1


def _runs(flags: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices (inclusive) of flagged runs, merging gaps <= ``max_gap``."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return idx, idx
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = idx[np.concatenate([[0], breaks + 1])]
    ends = idx[np.concatenate([breaks, [idx.size - 1]])]
    return starts, ends


def find_episodes(
    flags: np.ndarray,
    ts: np.ndarray | None = None,
    max_gap: int = 0,
    score: np.ndarray | None = None,
) -> list[Episode]:
    """Group consecutive flagged points into :class:`Episode` objects.

    Args:
        flags: ``(n,)`` bool (or 0/1) array, True where a point is flagged.
        ts: optional ``(n,)`` timestamps (any type); copied into ``start_ts``/``end_ts``.
        max_gap: runs separated by at most this many unflagged points are merged into one
            episode (0: only strictly consecutive points form an episode).
        score: optional ``(n,)`` scores used to locate the peak of each episode.

    Returns:
        Episodes in time order; an empty list when nothing is flagged.

    Raises:
        ValueError: if ``flags`` is not 1-D, ``ts``/``score`` have another length, or
            ``max_gap`` is negative.
    """
    f = np.asarray(flags).astype(bool)
    if f.ndim != 1:
        raise ValueError(f"flags must be 1-D, got shape {f.shape}")
    if isinstance(max_gap, bool) or int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"max_gap must be a non-negative integer, got {max_gap!r}")
    for name, arr in (("ts", ts), ("score", score)):
        if arr is not None and len(arr) != f.shape[0]:
            raise ValueError(f"{name} has length {len(arr)}, flags has {f.shape[0]}")
    sc = None if score is None else np.asarray(score, dtype=np.float64)
    starts, ends = _runs(f, int(max_gap))
    episodes = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        peak = (
            s if sc is None else s + int(np.argmax(np.where(f[s : e + 1], sc[s : e + 1], -np.inf)))
        )
        episodes.append(
            Episode(
                start=s,
                end=e,
                peak=peak,
                n_points=int(f[s : e + 1].sum()),
                start_ts=None if ts is None else ts[s],
                end_ts=None if ts is None else ts[e],
                peak_score=None if sc is None else float(sc[peak]),
            )
        )
    return episodes
