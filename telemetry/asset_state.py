"""An asset's state now or at a past time: reported values, liveness, desired state, delta.

The present comes from ``twins.state`` (kept by ingest at commit). A past time ``at`` is
answered from what is stored, as asset-state.v1 (``twins.state.state_document``):

- **reported**: per metric, the newest stored sample with sensor time ``<= at`` (one index
  probe per metric on ``tsample_series_ts``); its ``received_at`` is null (samples do not
  keep their receipt time, their event does);
- **liveness**: judged on the newest event *received* (server clock) ``<= at`` (index
  ``tevent_asset_received``), against the asset's cadence;
- **desired** and **revision**: from the asset's newest audit entry written ``<= at`` (the
  chain keeps each version of asset.v1, desired state included; index ``audit_resource_seq``).
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from telemetry.models import TelemetryEvent, TelemetrySample
from twins.models import Asset, AuditEntry, ReportedMetric
from twins.state import current_state, expected_cadence, state_document

_VALUES_AT = f"""
SELECT m, s.value, s.ts
FROM unnest(%(metrics)s::text[]) AS m
CROSS JOIN LATERAL (
    SELECT value, ts FROM {TelemetrySample._meta.db_table}
    WHERE asset_id = %(asset)s AND metric = m AND ts <= %(at)s
    ORDER BY ts DESC LIMIT 1) AS s
ORDER BY m
"""


def asset_state(asset: Asset, at: datetime | None = None) -> dict:
    """asset-state.v1 of ``asset`` now (``at`` None) or at the past time ``at`` (aware)."""
    if at is None:
        return current_state(asset)
    reported = list(ReportedMetric.objects.filter(asset=asset))
    names = asset.metric_names or [r.metric for r in reported]
    with connection.cursor() as cursor:
        cursor.execute(_VALUES_AT, {"metrics": names, "asset": asset.pk, "at": at})
        rows = cursor.fetchall()
    metrics = {m: {"value": v, "unit": asset.unit_of(m), "ts": ts.isoformat(),
                   "received_at": None} for m, v, ts in rows}
    last = (TelemetryEvent.objects.filter(asset=asset, received_at__lte=at)
            .order_by("-received_at").values_list("received_at", flat=True).first())
    entry = (AuditEntry.objects.filter(resource_type="asset", resource_id=str(asset.pk),
                                       at__lte=at).order_by("-seq").values("after").first())
    after = (entry or {}).get("after") or {}
    return state_document(asset, at=at, metrics=metrics, last_received=last,
                          cadence=expected_cadence(asset, reported),
                          desired=after.get("desired") or {}, revision=after.get("revision", 0))
