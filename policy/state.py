"""The live state of an asset (the last reading per metric) and evidence drift.

Which reading describes the plant now: the one OpsTwin received last. Safety decisions
(interlocks, the evidence a proposal is decided on, the drift check before approval and
execution) take, per metric, the reading of the asset's most recently *received* event
(``TelemetryEvent.received_at``, stamped by ingest on OpsTwin's clock; ties inside one ingest
batch go to the later sensor time). The sensor's timestamp only orders history (charts,
detection, verification windows): ingest accepts readings up to ``INGEST_MAX_FUTURE_SECONDS``
(300 s) ahead, and a sensor whose clock runs ahead must never shadow newer readings.

A reading dated in the future (sensor ``ts`` more than ``MAX_CLOCK_SKEW_S`` after its receipt)
never decides anything: interlocks deny on it and the drift check counts it as drifted. It is
not skipped either, since an older reading behind it no longer describes the plant.

A reading's age is measured on OpsTwin's clock from when it was received, not from the sensor's
timestamp: sensor clocks drift and a replay (the SKAB demo) carries historical timestamps. A
metric whose last reading lags the asset's newest event (by sensor time, counting only events
that were not dated in the future) is also stale: that sensor stopped while others report.

Cost: one query per metric: a backward scan of the index (asset, received_at, ts) of the
asset's events, each probing the samples index (asset, metric, ts), stopping at the first
event carrying the metric (the first one, when every event carries every metric). The scan
never goes further back than the receipt of the metric's newest reading by sensor time (any
later receipt beats it) nor than ``horizon_s`` (interlocks pass their ``max_age_s``). Beyond
the horizon the newest reading by sensor time is returned instead: it is older than the
horizon, so it can only be judged stale. ``benchmarks/interlock_reading.py`` (691,200 events):
a few ms per reading, ~35 ms for a metric silent for a day under the 1-hour horizon at 1 Hz.
Samples are tied to events by (asset, ts): two events of one asset at the same sensor instant
are indistinguishable, as everywhere in the narrow storage.

Evidence (stored on each proposal) is the state the decision was made on. Its tolerance per
metric is ``tolerance_sigmas`` × the metric's standard deviation in the simulation's
calibration window (``SimulationRun.request["state"][metric]["std"]``), never below 1 % of the
recorded value's magnitude (``MIN_RELATIVE_TOLERANCE``) so a flat calibration window does not
make every later reading "drift". A metric with no current reading has drifted (fail closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import F
from django.utils import timezone

from telemetry.models import TelemetryEvent

MIN_RELATIVE_TOLERANCE = 0.01
#: Seconds a reading's sensor time may run ahead of its receipt before it counts as dated in
#: the future (clock skew of an NTP-synchronised device is milliseconds; 5 s leaves room).
MAX_CLOCK_SKEW_S = 5.0
#: How far back (receipt time, seconds) the last-received reading is searched for when the
#: caller gives no horizon (evidence, drift); older data cannot describe the plant now.
DEFAULT_HORIZON_S = 3600.0


@dataclass(frozen=True)
class Reading:
    """The last value of one metric: ``value`` in the metric's unit, sensor time ``ts``,
    and ``received_at`` on OpsTwin's clock."""

    metric: str
    value: float
    ts: datetime
    received_at: datetime

    def age_s(self, now: datetime) -> float:
        """Seconds since OpsTwin received this reading."""
        return (now - self.received_at).total_seconds()

    @property
    def ahead_s(self) -> float:
        """Seconds by which the sensor time runs ahead of the receipt (negative: behind)."""
        return (self.ts - self.received_at).total_seconds()

    @property
    def dated_in_future(self) -> bool:
        """Whether the sensor dated this reading more than ``MAX_CLOCK_SKEW_S`` after receipt."""
        return self.ahead_s > MAX_CLOCK_SKEW_S

    def to_json(self) -> dict:
        return {"value": self.value, "ts": self.ts.isoformat(),
                "received_at": self.received_at.isoformat()}


#: One round trip: ``newest`` is the newest reading by sensor time (index asset, metric, ts)
#: with its event's receipt; ``last`` walks the asset's events back by receipt (index asset,
#: received_at, ts) no further than that receipt or the horizon, probing each for the metric;
#: the newest by sensor time answers when ``last`` finds nothing.
_LAST_RECEIVED = """
WITH newest AS (
    SELECT s.ts, s.value, COALESCE((
        SELECT max(e.received_at) FROM telemetry_telemetryevent e
        WHERE e.asset_id = s.asset_id AND e.ts = s.ts), s.ts) AS received_at
    FROM telemetry_telemetrysample s
    WHERE s.asset_id = %(asset)s AND s.metric = %(metric)s
    ORDER BY s.ts DESC LIMIT 1
), last AS (
    SELECT e.ts, v.value, e.received_at
    FROM telemetry_telemetryevent e
    CROSS JOIN LATERAL (
        SELECT value FROM telemetry_telemetrysample
        WHERE asset_id = e.asset_id AND metric = %(metric)s AND ts = e.ts LIMIT 1
    ) v
    WHERE EXISTS (SELECT FROM newest) AND e.asset_id = %(asset)s
      AND e.received_at >= GREATEST((SELECT received_at FROM newest), %(floor)s)
    ORDER BY e.received_at DESC, e.ts DESC LIMIT 1
)
SELECT ts, value, received_at FROM last
UNION ALL
SELECT ts, value, received_at FROM newest WHERE NOT EXISTS (SELECT FROM last)
LIMIT 1
"""


def latest_reading(
    asset, metric: str, *, horizon_s: float = DEFAULT_HORIZON_S, now: datetime | None = None
) -> Reading | None:
    """The last reading of ``metric`` on ``asset`` that OpsTwin received, or None if none.

    Searched among events received in the last ``horizon_s`` seconds (before ``now``, default
    the current time); when none of them carries the metric, the newest reading by sensor
    time, which was then received before the horizon. See the module docstring for the rule
    and its cost (one query).
    """
    floor = (now or timezone.now()) - timedelta(seconds=horizon_s)
    with connection.cursor() as cursor:
        cursor.execute(_LAST_RECEIVED, {"asset": asset.pk, "metric": metric, "floor": floor})
        row = cursor.fetchone()
    return None if row is None else Reading(metric, float(row[1]), row[0], row[2])


def newest_event_ts(asset) -> datetime | None:
    """Sensor timestamp of the asset's newest event (the twin's own clock), or None.

    For ordering history (simulation start, verification windows); safety checks use
    ``current_event_ts``, which ignores events dated in the future.
    """
    return (TelemetryEvent.objects.filter(asset=asset).order_by("-ts")
            .values_list("ts", flat=True).first())


def current_event_ts(asset, *, now: datetime) -> datetime | None:
    """Sensor time of the asset's newest event that was not dated in the future, or None.

    An event counts when its ``ts`` is at most ``MAX_CLOCK_SKEW_S`` after both its receipt and
    ``now`` (index asset, ts, scanned backward from ``now`` + skew).
    """
    skew = timedelta(seconds=MAX_CLOCK_SKEW_S)
    return (TelemetryEvent.objects.filter(asset=asset, ts__lte=now + skew)
            .filter(ts__lte=F("received_at") + skew).order_by("-ts")
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


def _drifted(then: dict, current: Reading | None, tolerance: float) -> str | None:
    if current is None:
        return "no current reading"
    if current.dated_in_future:
        return f"reading dated in the future ({current.ahead_s:.0f} s after its receipt)"
    if abs(current.value - float(then["value"])) > tolerance:
        return "outside tolerance"
    return None


def drift(evidence: dict, asset) -> list[dict]:
    """Metrics whose current reading left the evidence's tolerance (or vanished).

    The current reading is the last one received (module docstring); one dated in the future
    cannot confirm the evidence and counts as drifted. Returns ``[{"metric", "recorded",
    "current" (None if missing), "tolerance", "reason"}]``; an evidence without any recorded
    state drifts as a whole (``metric`` "*"): a decision made on no data cannot be re-checked.
    """
    recorded = (evidence or {}).get("state") or {}
    if not recorded:
        return [{"metric": "*", "recorded": None, "current": None, "tolerance": None,
                 "reason": "no recorded state"}]
    drifted = []
    for metric, then in recorded.items():
        current = latest_reading(asset, metric)
        tolerance = (evidence.get("tolerance") or {}).get(metric, 0.0)
        reason = _drifted(then, current, tolerance)
        if reason:
            drifted.append({"metric": metric, "recorded": then["value"],
                            "current": current.value if current else None,
                            "tolerance": tolerance, "reason": reason})
    return drifted
