"""Reported state, desired state and their delta, per asset; the coalesced ``asset.state`` feed.

Shapes (asset-state.v1, ``twins/schemas/asset-state.v1.json``)::

    {"asset": 7, "twin": "plant-1", "slug": "pump-1", "revision": 4, "at": "2026-12-03T...",
     "liveness": "live" | "silent" | "unknown", "last_received_at": "...",
     "silent_after_seconds": 50.0,
     "reported": {"Pressure": {"value": 2.1, "unit": "bar", "ts": "...", "received_at": "..."}},
     "desired": {"action": "reduce_load", "parameters": {...}, "proposal": 12,
                 "commanded_at": "...", "converge_by": "...",
                 "expected": {"Pressure": [1.8, 2.2]}},
     "delta": [{"metric": "Pressure", "status": "diverged", "value": 2.6, "band": [1.8, 2.2]}]}

- **Reported** (``ReportedMetric``) is written by ingest in the transaction that stores the
  samples (``record_reported``), so it never disagrees with stored telemetry.
- **Liveness** is judged on the server's receipt time, never the sensor's clock: an asset is
  ``silent`` when nothing arrived for more than ``ASSET_SILENT_AFTER_INTERVALS`` sampling
  intervals (the asset type's ``cadence_seconds``, else the interval observed at ingest), and
  ``unknown`` before it reported anything or while its cadence is unknown.
- **Desired** (``Asset.desired``) is what OpsTwin last commanded: ``policy`` sets it through
  ``set_desired`` when an execution is acknowledged and when a rollback is.
- **Delta** lists the metrics whose reported value is outside the band the command expected:
  ``awaiting`` (no reading received since the command), ``converging`` (outside, but the
  verification window, ``converge_by``, is still open) or ``diverged`` (outside after it).
- **The feed** carries ``asset.state`` events (resource ``asset_state``) coalesced by
  ``publish_states``: at most one per asset per ``ASSET_STATE_MIN_INTERVAL_SECONDS`` and only
  when something changed (a reading, the liveness, the revision), never one per sample.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from twins.ledger import append_events, record_change
from twins.models import Asset, AssetType, ReportedMetric, StatePublication

LIVE, SILENT, UNKNOWN = "live", "silent", "unknown"
AWAITING, CONVERGING, DIVERGED = "awaiting", "converging", "diverged"
STATE_EVENT = "asset.state"
STATE_RESOURCE = "asset_state"
#: Weight of the newest gap in the exponentially weighted mean sampling interval.
CADENCE_WEIGHT = 0.2
_PUBLISHER_LOCK = 0x0475_7432

_UPSERT = f"""
INSERT INTO {ReportedMetric._meta.db_table} AS r
    (asset_id, metric, value, ts, received_at, cadence_seconds)
SELECT a, m, v, t, %(now)s, c
FROM unnest(%(assets)s::bigint[], %(metrics)s::text[], %(values)s::float8[],
            %(ts)s::timestamptz[], %(cadences)s::float8[]) AS u(a, m, v, t, c)
ORDER BY a, m
ON CONFLICT (asset_id, metric) DO UPDATE SET
    received_at = excluded.received_at,
    value = CASE WHEN excluded.ts >= r.ts THEN excluded.value ELSE r.value END,
    ts = GREATEST(r.ts, excluded.ts),
    cadence_seconds = CASE
        WHEN excluded.ts <= r.ts THEN r.cadence_seconds
        WHEN r.cadence_seconds IS NULL
            THEN coalesce(excluded.cadence_seconds, extract(epoch FROM excluded.ts - r.ts))
        ELSE {1 - CADENCE_WEIGHT} * r.cadence_seconds + {CADENCE_WEIGHT} * coalesce(
            excluded.cadence_seconds, extract(epoch FROM excluded.ts - r.ts)) END
"""


# Candidates for publication, outside their spacing: a reading received since the last
# publication, a new revision, or published as live (it may have gone silent since).
_DUE = f"""
SELECT a.id FROM {Asset._meta.db_table} a
LEFT JOIN {StatePublication._meta.db_table} p ON p.asset_id = a.id
LEFT JOIN (SELECT asset_id, max(received_at) AS newest FROM {ReportedMetric._meta.db_table}
           GROUP BY asset_id) r ON r.asset_id = a.id
WHERE (r.newest IS NOT NULL OR p.asset_id IS NOT NULL)
  AND (p.asset_id IS NULL OR (p.published_at <= %(before)s AND (
       p.received_at IS DISTINCT FROM r.newest OR p.revision <> a.revision
       OR p.liveness = '{LIVE}')))
ORDER BY a.id
LIMIT %(limit)s
"""


def record_reported(cursor, readings, now: datetime) -> None:
    """Fold a batch of readings into the reported state, in the ingest transaction.

    ``readings`` is an iterable of ``(asset_id, ts, {metric: value})`` (ts: sensor time, aware
    datetime); ``now`` the receipt time. One statement for the batch: per (asset, metric) the
    newest reading, and the batch's mean gap between the asset's readings (sensor time) as a
    cadence sample.
    Rows are written in (asset, metric) order, so concurrent ingest processes lock them in the
    same order and cannot deadlock.
    """
    per_asset: dict[int, list] = {}  # asset → [values, stamps, first ts, last ts, count]
    for asset_id, ts, metrics in readings:
        acc = per_asset.get(asset_id)
        if acc is None:
            per_asset[asset_id] = [dict(metrics), dict.fromkeys(metrics, ts), ts, ts, 1]
            continue
        if ts >= acc[3]:  # in order (the usual case): C-level dict updates
            acc[0].update(metrics)
            acc[1].update(dict.fromkeys(metrics, ts))
            acc[3] = ts
        else:  # a late reading: only metrics it is newest for
            for metric, value in metrics.items():
                if ts >= acc[1].get(metric, ts):
                    acc[0][metric], acc[1][metric] = value, ts
            acc[2] = min(acc[2], ts)
        acc[4] += 1
    if not per_asset:
        return
    assets, names, values, stamps, cadences = [], [], [], [], []
    for asset_id in sorted(per_asset):
        latest, when, first, last, count = per_asset[asset_id]
        # The batch's mean gap between readings of the asset (sensor time).
        cadence = (last - first).total_seconds() / (count - 1) if count > 1 and last > first \
            else None
        for metric in sorted(latest):
            assets.append(asset_id)
            names.append(metric)
            values.append(latest[metric])
            stamps.append(when[metric])
            cadences.append(cadence)
    cursor.execute(_UPSERT, {"now": now, "assets": assets, "metrics": names, "values": values,
                             "ts": stamps, "cadences": cadences})


def expected_cadence(asset: Asset, reported: list[ReportedMetric]) -> float | None:
    """The asset's sampling interval in seconds: the shortest ``cadence_seconds`` its metric
    declarations give, else the median of the intervals observed at ingest (None: unknown)."""
    declared = [m["cadence_seconds"] for m in asset.declared_metrics if m.get("cadence_seconds")]
    if declared:
        return float(min(declared))
    observed = [r.cadence_seconds for r in reported if r.cadence_seconds]
    return float(statistics.median(observed)) if observed else None


def liveness(last_received: datetime | None, cadence: float | None, now: datetime) -> str:
    """``live``/``silent``/``unknown`` (module docstring); ``now`` and ``last_received`` are
    server-clock times."""
    if last_received is None or cadence is None:
        return UNKNOWN
    silent_after = cadence * settings.ASSET_SILENT_AFTER_INTERVALS
    return SILENT if (now - last_received).total_seconds() > silent_after else LIVE


# ``liveness`` == SILENT in SQL, for ordering and filtering Asset querysets (e.g. the overview
# pages silent assets first): the newest receipt is older than ASSET_SILENT_AFTER_INTERVALS
# sampling intervals, the interval being ``expected_cadence``'s: the smallest positive
# ``cadence_seconds`` the asset's own metrics declare (else its type's), else the median of the
# intervals observed at ingest. Unknown is not silent. Keep the two forms in step
# (policy/tests/test_approval_queue.py compares them).
_SILENT_SQL = """COALESCE((
  SELECT MAX(r.received_at) < %s - make_interval(secs => %s * COALESCE(
    (SELECT MIN((m ->> 'cadence_seconds')::float8)
       FROM jsonb_array_elements(CASE
         WHEN jsonb_typeof({asset}.metrics) <> 'array' THEN '[]'::jsonb
         WHEN jsonb_array_length({asset}.metrics) > 0 THEN {asset}.metrics
         ELSE COALESCE((SELECT CASE WHEN jsonb_typeof(t.metrics) = 'array' THEN t.metrics END
                        FROM {asset_type} t WHERE t.id = {asset}.asset_type_id), '[]'::jsonb)
         END) AS m
      WHERE CASE WHEN jsonb_typeof(m -> 'cadence_seconds') = 'number'
                 THEN (m ->> 'cadence_seconds')::float8 > 0 ELSE false END),
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY o.cadence_seconds)
       FROM {reported} o WHERE o.asset_id = {asset}.id AND o.cadence_seconds > 0)))
  FROM {reported} r WHERE r.asset_id = {asset}.id), false)"""


def silent_sql(now: datetime) -> RawSQL:
    """A boolean expression for an ``Asset`` queryset: the asset is silent at ``now``
    (``liveness``'s rule). It names the asset table itself, so it serves a top-level Asset
    queryset only (not one reached through a join)."""
    sql = _SILENT_SQL.format(asset=Asset._meta.db_table, asset_type=AssetType._meta.db_table,
                             reported=ReportedMetric._meta.db_table)
    return RawSQL(sql, (now, settings.ASSET_SILENT_AFTER_INTERVALS),
                  output_field=BooleanField())


def delta(desired: dict, reported: dict[str, dict], now: datetime) -> list[dict]:
    """The metrics whose reported value has not converged on ``desired["expected"]``.

    ``reported`` maps metric → ``{"value", "received_at"}`` (``received_at`` a datetime or ISO
    string). A reading counts only if it was received after ``desired["commanded_at"]``; one
    with no receipt time (a past state read from samples) is judged on its value alone.
    """
    expected = desired.get("expected") or {}
    commanded = _when(desired.get("commanded_at"))
    converge_by = _when(desired.get("converge_by"))
    found = []
    for metric, band in sorted(expected.items()):
        low, high = band
        reading = reported.get(metric)
        received = _when(reading["received_at"]) if reading else None
        if reading is None or (commanded is not None and received is not None
                               and received < commanded):
            found.append({"metric": metric, "status": AWAITING, "value": None, "band": band})
        elif not low <= reading["value"] <= high:
            status = CONVERGING if converge_by is not None and now < converge_by else DIVERGED
            found.append({"metric": metric, "status": status, "value": reading["value"],
                          "band": band})
    return found


def _when(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_datetime(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def state_of(asset: Asset, reported: list[ReportedMetric], now: datetime) -> dict:
    """asset-state.v1 of ``asset`` from its ``reported`` rows at ``now`` (no queries if the
    asset's twin and type are loaded)."""
    cadence = expected_cadence(asset, reported)
    last = max((r.received_at for r in reported), default=None)
    metrics = {r.metric: {"value": r.value, "unit": asset.unit_of(r.metric), "ts": _iso(r.ts),
                          "received_at": _iso(r.received_at)}
               for r in sorted(reported, key=lambda r: r.metric)}
    return state_document(asset, at=now, metrics=metrics, last_received=last, cadence=cadence,
                          desired=asset.desired, revision=asset.revision)


def state_document(asset: Asset, *, at: datetime, metrics: dict, last_received, cadence,
                   desired: dict, revision: int) -> dict:
    """Assemble asset-state.v1 (shared by the present state and ``telemetry``'s state at a
    past time, which reads its parts from stored telemetry and the audit chain)."""
    silent_after = cadence * settings.ASSET_SILENT_AFTER_INTERVALS if cadence else None
    return {
        "asset": asset.pk, "twin": asset.twin.slug, "slug": asset.slug, "revision": revision,
        "at": at.isoformat(), "liveness": liveness(last_received, cadence, at),
        "last_received_at": _iso(last_received), "silent_after_seconds": silent_after,
        "reported": metrics, "desired": desired or {},
        "delta": delta(desired or {}, metrics, at),
    }


def states_of(assets: list[Asset], now: datetime | None = None) -> list[dict]:
    """asset-state.v1 of each of ``assets`` (twin and type loaded) now, in one query."""
    now = now or timezone.now()
    reported = reported_by_asset([a.pk for a in assets])
    return [state_of(asset, reported.get(asset.pk, []), now) for asset in assets]


def reported_by_asset(asset_ids: list[int]) -> dict[int, list[ReportedMetric]]:
    """The reported rows of ``asset_ids``, by asset id, each list in metric order (1 query)."""
    reported: dict[int, list[ReportedMetric]] = {}
    for row in ReportedMetric.objects.filter(asset_id__in=asset_ids).order_by("asset_id",
                                                                             "metric"):
        reported.setdefault(row.asset_id, []).append(row)
    return reported


def current_state(asset: Asset, now: datetime | None = None) -> dict:
    """asset-state.v1 of ``asset`` now (two small queries)."""
    now = now or timezone.now()
    return state_of(asset, list(ReportedMetric.objects.filter(asset=asset)), now)


def set_desired(asset: Asset, desired: dict, *, actor, reason: str = "",
                request=None) -> Asset:
    """Record what OpsTwin commanded ``asset`` (caller's transaction): bumps its revision and
    writes ``asset.desire`` to the audit chain with the asset's new state (asset.v1), which is
    how ``state?at=`` finds the desired state of a past time.

    ``desired``: ``{"action", "parameters", "proposal", "commanded_at", "converge_by",
    "expected": {metric: [low, high]}}`` (any JSON object; ``{}`` clears it).
    """
    from twins.services import asset_state

    locked = (Asset.objects.select_for_update(of=("self",), no_key=True)
              .select_related("twin", "asset_type").get(pk=asset.pk))
    before = asset_state(locked)
    locked.desired, locked.revision = desired, locked.revision + 1
    locked.save(update_fields=["desired", "revision", "updated_at"])
    record_change(actor=actor, action="asset.desire", resource_type="asset",
                  resource_id=locked.pk, operation="updated", before=before,
                  after=asset_state(locked), twin=locked.twin, reason=reason, request=request)
    asset.desired, asset.revision = locked.desired, locked.revision
    return locked


def publish_states(now: datetime | None = None) -> int:
    """Put the changed assets' state on the feed, coalesced; returns the number of events.

    An asset is due when its reported state was received after its last publication, its
    liveness changed, or its revision moved, and its last publication is at least
    ``ASSET_STATE_MIN_INTERVAL_SECONDS`` old. One transaction; a concurrent call returns 0 at
    once (a transaction-scoped advisory lock), so Celery beat and the ingest process may both
    call it. Run every second by Celery beat (``twins.tasks.publish_asset_states``). At most
    ``ASSET_STATE_PUBLISH_LIMIT`` assets per call (lowest ids first; the rest stay due).
    """
    now = now or timezone.now()
    spacing = timedelta(seconds=settings.ASSET_STATE_MIN_INTERVAL_SECONDS)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_PUBLISHER_LOCK])
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute(_DUE, {"before": now - spacing,
                                  "limit": settings.ASSET_STATE_PUBLISH_LIMIT})
            due = [row[0] for row in cursor.fetchall()]
        published = {p.asset_id: p for p in StatePublication.objects.filter(asset_id__in=due)}
        reported = reported_by_asset(due)
        events, marks = [], []
        assets = Asset.objects.select_related("twin", "asset_type").filter(pk__in=due)
        for asset in assets:
            state = state_of(asset, reported.get(asset.pk, []), now)
            last = published.get(asset.pk)
            newest = max((r.received_at for r in reported.get(asset.pk, [])), default=None)
            if last is not None and (last.published_at > now - spacing or (
                    last.liveness == state["liveness"] and last.revision == asset.revision
                    and (newest is None or last.received_at == newest))):
                continue
            events.append({"type": STATE_EVENT, "resource_type": STATE_RESOURCE,
                           "resource_id": asset.pk, "operation": "updated",
                           "twin": asset.twin, "actor": "ingest", "data": state})
            marks.append(StatePublication(asset=asset, published_at=now, received_at=newest,
                                          liveness=state["liveness"], revision=asset.revision))
        append_events(events)
        StatePublication.objects.bulk_create(
            marks, update_conflicts=True, unique_fields=["asset"],
            update_fields=["published_at", "received_at", "liveness", "revision"])
    return len(events)
