"""How the detected anomaly episodes line up with SKAB's labels (point-wise).

A row counts as predicted anomalous when its timestamp falls inside an anomaly episode of its
asset (``started_at`` to ``ended_at``/``last_seen_at``, inclusive). Precision = TP/(TP+FP),
recall = TP/(TP+FN), F1 their harmonic mean. The labels are read here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo.skab import SkabRun
from telemetry.models import Anomaly
from twins.models import Asset


@dataclass
class Agreement:
    """Confusion counts of one file (or the total) and the derived rates."""

    name: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __iadd__(self, other: Agreement) -> Agreement:
        self.tp, self.fp = self.tp + other.tp, self.fp + other.fp
        self.fn, self.tn = self.fn + other.fn, self.tn + other.tn
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def predicted_mask(asset: Asset, ts: np.ndarray) -> np.ndarray:
    """(n,) bool: which of ``ts`` (datetime64, UTC) fall inside one of the asset's episodes."""
    mask = np.zeros(len(ts), dtype=bool)
    for start, last, end in Anomaly.objects.filter(asset=asset).values_list(
        "started_at", "last_seen_at", "ended_at"
    ):
        lo = np.datetime64(start.replace(tzinfo=None), "s")
        hi = np.datetime64((end or last).replace(tzinfo=None), "s")
        mask |= (ts >= lo) & (ts <= hi)
    return mask


def agreement(run: SkabRun, asset: Asset, leave_out: np.ndarray | None = None) -> Agreement | None:
    """Confusion counts of ``asset``'s episodes against ``run.labels`` (None if unlabelled).

    ``leave_out``: (n,) bool, rows not to score (the demo's plant replaced their readings
    with its response to a command, so the file's labels no longer describe them)."""
    if run.labels is None:
        return None
    predicted, actual = predicted_mask(asset, run.ts), run.labels
    if leave_out is not None:
        predicted, actual = predicted[~leave_out], actual[~leave_out]
    return Agreement(
        name=run.name, tp=int(np.sum(predicted & actual)), fp=int(np.sum(predicted & ~actual)),
        fn=int(np.sum(~predicted & actual)), tn=int(np.sum(~predicted & ~actual)),
    )
