"""The engine callbacks of a running job: progress written to, and the cancel flag read from,
the run's row, each at a bounded rate.

Progress is a volatile indicator, not a state change: it is written with a plain conditional
UPDATE (only while the run is ``running``), with no audit entry; the run's lifecycle (queued,
running, cancel requested, finished) is what the audit chain records. Each write also puts a
feed-only ``simulation.progress`` event (resource ``simulation_progress``, schema
``simulation-progress.v1``) on the change feed, in the same transaction, through
``twins.ledger.append_events`` (like ``asset.state``): the console moves its progress bars
from it without polling. Both are throttled together: at most one per ``interval`` per run.
"""

from __future__ import annotations

import math
import time

from django.db import transaction

from simulation.models import SimulationRun, SimulationStatus
from twins.ledger import append_events

PROGRESS_EVENT = "simulation.progress"
PROGRESS_RESOURCE = "simulation_progress"


def progress_event(run_id: int, twin, fraction: float, done: int, total: int,
                   actor: str = "simulator") -> dict:
    """The ``append_events`` item of one progress write; its data is simulation-progress.v1:
    ``{"run": 12, "twin": "plant-1" | None, "progress": 0.42, "samples_done": 4200,
    "samples_target": 10000, "status": "running"}`` (``twin`` a ``Twin`` or None). ``actor``
    names the event's author: for a twin-less run, the user who started it, since the feed
    shows a twin-less event only to its actor and to admins (``twins.feed_scope``)."""
    return {"type": PROGRESS_EVENT, "resource_type": PROGRESS_RESOURCE, "resource_id": run_id,
            "operation": "updated", "twin": twin, "actor": actor,
            "data": {"run": run_id, "twin": twin.slug if twin is not None else None,
                     "progress": fraction, "samples_done": done, "samples_target": total,
                     "status": SimulationStatus.RUNNING.value}}


class ProgressWriter:
    """``progress(done, total)`` for the engine: writes ``samples_done``, ``samples_target``
    and ``progress = done / total`` (0..1) at most once per ``interval`` seconds (the first
    call always writes), and with each write a ``simulation.progress`` feed event of the
    run's ``twin`` (a ``Twin``, None for a run without an asset) by ``actor`` (for a twin-less
    run, the username of whoever started it). Nothing is written or published once the run is
    no longer ``running``."""

    def __init__(self, run_id: int, interval: float, twin=None,
                 actor: str = "simulator") -> None:
        self.run_id, self.interval, self.twin, self._last = run_id, interval, twin, -math.inf
        self.actor = actor

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        fraction = min(done / total, 1.0) if total > 0 else 0.0
        with transaction.atomic():
            written = SimulationRun.objects.filter(
                pk=self.run_id, status=SimulationStatus.RUNNING).update(
                progress=fraction, samples_done=done, samples_target=total)
            if written:
                append_events([progress_event(self.run_id, self.twin, fraction, done, total,
                                              self.actor)])


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
