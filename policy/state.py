"""The live state of an asset (latest reading per metric) and evidence drift.

A reading's age is measured on OpsTwin's clock from when it was received
(``TelemetryEvent.received_at``), not from the sensor's timestamp: sensor clocks drift and a
replay (the SKAB demo) carries historical timestamps. A metric whose newest reading lags the
asset's newest event (by sensor time) is also stale: that sensor stopped while others report.

Evidence (stored on each proposal) is the state the decision was made on. Its tolerance per
metric is ``tolerance_sigmas`` × the metric's standard deviation in the simulation's
calibration window (``SimulationRun.request["state"][metric]["std"]``), never below 1 % of the
recorded value's magnitude (``MIN_RELATIVE_TOLERANCE``) so a flat calibration window does not
make every later reading "drift". A metric with no current reading has drifted (fail closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from telemetry.models import TelemetryEvent, TelemetrySample

MIN_RELATIVE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Reading:
    """The newest value of one metric: ``value`` in the metric's unit, sensor time ``ts``,
    and ``received_at`` on OpsTwin's clock."""

    metric: str
    value: float
    ts: datetime
    received_at: datetime

    def age_s(self, now: datetime) -> float:
        """Seconds since OpsTwin received this reading."""
        return (now - self.received_at).total_seconds()

    def to_json(self) -> dict:
        return {"value": self.value, "ts": self.ts.isoformat(),
                "received_at": self.received_at.isoformat()}


def latest_reading(asset, metric: str) -> Reading | None:
    """The newest reading of ``metric`` on ``asset`` (index asset, metric, ts), or None."""
    row = (TelemetrySample.objects.filter(asset=asset, metric=metric).order_by("-ts")
           .values_list("ts", "value").first())
    if row is None:
        return None
    received = (TelemetryEvent.objects.filter(asset=asset, ts=row[0]).order_by("-received_at")
                .values_list("received_at", flat=True).first())
    return Reading(metric, float(row[1]), row[0], received or row[0])


def newest_event_ts(asset) -> datetime | None:
    """Sensor timestamp of the asset's newest event (the twin's own clock), or None."""
    return (TelemetryEvent.objects.filter(asset=asset).order_by("-ts")
            .values_list("ts", flat=True).first())


def live_state(asset, metrics: list[str] | None = None) -> dict[str, Reading]:
    """``{metric: Reading}`` for ``metrics`` (default: every declared metric) that have data."""
    readings = {m: latest_reading(asset, m) for m in (metrics or asset.metric_names)}
    return {m: r for m, r in readings.items() if r is not None}


def _tolerance(value: float, std: float | None, sigmas: float) -> float:
    spread = sigmas * std if std is not None and math.isfinite(std) else 0.0
    return max(spread, MIN_RELATIVE_TOLERANCE * abs(value), 1e-9)


def evidence_snapshot(asset, simulation, *, sigmas: float, now: datetime | None = None) -> dict:
    """The evidence a proposal is decided on: live state, its tolerances, the simulation id."""
    calibration = ((simulation.request or {}).get("state") or {}) if simulation else {}
    state = live_state(asset)
    return {
        "taken_at": (now or timezone.now()).isoformat(),
        "simulation": simulation.pk if simulation else None,
        "tolerance_sigmas": sigmas,
        "state": {m: r.to_json() for m, r in state.items()},
        "tolerance": {m: _tolerance(r.value, (calibration.get(m) or {}).get("std"), sigmas)
                      for m, r in state.items()},
    }


def drift(evidence: dict, asset) -> list[dict]:
    """Metrics whose current reading left the evidence's tolerance (or vanished).

    Returns ``[{"metric", "recorded", "current" (None if missing), "tolerance"}]``; an
    evidence without any recorded state drifts as a whole (``metric`` "*"): a decision made
    on no data cannot be re-checked.
    """
    recorded = (evidence or {}).get("state") or {}
    if not recorded:
        return [{"metric": "*", "recorded": None, "current": None, "tolerance": None}]
    drifted = []
    for metric, then in recorded.items():
        now = latest_reading(asset, metric)
        tolerance = (evidence.get("tolerance") or {}).get(metric, 0.0)
        if now is None or abs(now.value - float(then["value"])) > tolerance:
            drifted.append({"metric": metric, "recorded": then["value"],
                            "current": now.value if now else None, "tolerance": tolerance})
    return drifted

