"""The engine callbacks of a running job: progress written to, and the cancel flag read from,
the run's row, each at a bounded rate.

Progress is a volatile indicator, not a state change: it is written with a plain conditional
UPDATE (only while the run is ``running``), with no audit entry or change event; the run's
lifecycle (queued, running, cancel requested, finished) is what the audit chain records.
"""

from __future__ import annotations

import math
import time

from simulation.models import SimulationRun, SimulationStatus


class ProgressWriter:
    """``progress(done, total)`` for the engine: writes ``samples_done``, ``samples_target``
    and ``progress = done / total`` (0..1) at most once per ``interval`` seconds (the first
    call always writes)."""

    def __init__(self, run_id: int, interval: float) -> None:
        self.run_id, self.interval, self._last = run_id, interval, -math.inf

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        fraction = min(done / total, 1.0) if total > 0 else 0.0
        SimulationRun.objects.filter(pk=self.run_id, status=SimulationStatus.RUNNING).update(
            progress=fraction, samples_done=done, samples_target=total)


class CancelFlag:
    """``cancelled()`` for the engine: True once ``cancel_requested_at`` is set on the run.
    Reads the row at most once per ``interval`` seconds (the first call always reads); once
    True it stays True without reading again."""

    def __init__(self, run_id: int, interval: float) -> None:
        self.run_id, self.interval, self._last, self._set = run_id, interval, -math.inf, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._set or now - self._last < self.interval:
            return self._set
        self._last = now
        self._set = SimulationRun.objects.filter(
            pk=self.run_id, cancel_requested_at__isnull=False).exists()
        return self._set
