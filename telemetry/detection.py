"""Detection service: score new telemetry of an asset and keep anomaly episodes up to date.

The baseline is the seed's rolling z-score: each point is scored against the
``DETECTION_WINDOW`` points before it (not itself), flagged at |z| >= ``DETECTION_Z_THRESHOLD``,
score = min(1, |z|/5). Flagged points no more than ``DETECTION_EPISODE_GAP_SECONDS`` apart form
one episode, so a fault lasting minutes is one Anomaly, not hundreds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction

from policy.audit import record_change
from telemetry.choices import AnomalyStatus
from telemetry.detectors import RollingZScore, score_to_severity
from telemetry.models import Anomaly, DetectionState
from telemetry.series import Series, load_series
from twins.models import Asset

DETECTOR_NAME = "zscore"
ACTOR = "detector"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass
class Flagged:
    """One flagged point: its time, score 0..1, |z|, kind, top metric and contributions."""

    ts: datetime
    score: float
    statistic: float
    kind: str
    metric: str
    value: float
    window_mean: float
    window_std: float
    contributions: dict[str, float]


def _to_datetime(ts: np.datetime64) -> datetime:
    return ts.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def _flag_points(series: Series, window: int) -> list[Flagged]:
    detector = RollingZScore(window=window, threshold=settings.DETECTION_Z_THRESHOLD)
    history = series.X[: series.n_history] if series.n_history else None
    out = detector.score(series.X[series.n_history :], history=history)
    flagged = []
    for i in np.flatnonzero(out.flags):
        row = series.n_history + i
        j = int(out.metric_index[i])
        past = series.X[max(0, row - window) : row, j]
        flagged.append(Flagged(
            ts=_to_datetime(series.ts[row]), score=float(out.score[i]),
            statistic=float(out.statistic[i]), kind=str(out.kind[i]), metric=series.metrics[j],
            value=float(series.X[row, j]), window_mean=float(past.mean()),
            window_std=float(past.std(ddof=1)) if len(past) > 1 else 0.0,
            contributions={m: round(float(c), 4) for m, c in
                           zip(series.metrics, out.contributions[i], strict=True)},
        ))
    return flagged


def _episodes(points: list[Flagged], gap: timedelta) -> list[list[Flagged]]:
    groups: list[list[Flagged]] = []
    for point in points:
        if groups and point.ts - groups[-1][-1].ts <= gap:
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def _features(peak: Flagged) -> dict:
    return {
        "value": peak.value, "window_mean": peak.window_mean, "window_std": peak.window_std,
        "abs_z": peak.statistic, "peak_at": peak.ts.isoformat(),
        "contributions": peak.contributions, "window": settings.DETECTION_WINDOW,
        "threshold": settings.DETECTION_Z_THRESHOLD,
    }


def _serialize(anomaly: Anomaly) -> dict:
    from telemetry.api.serializers import AnomalySerializer

    return dict(AnomalySerializer(anomaly).data)


def _open_episode(asset: Asset, group: list[Flagged]) -> Anomaly:
    peak = max(group, key=lambda p: p.score)
    anomaly = Anomaly.objects.create(
        asset=asset, metric=peak.metric, detector=DETECTOR_NAME, kind=peak.kind,
        severity=score_to_severity(peak.score), score=peak.score, started_at=group[0].ts,
        last_seen_at=group[-1].ts, n_points=len(group), features=_features(peak),
    )
    record_change(actor=ACTOR, action="anomaly.open", resource_type="anomaly",
                  resource_id=anomaly.pk, operation="created", twin=asset.twin,
                  after=_serialize(anomaly))
    return anomaly


def _extend_episode(anomaly: Anomaly, group: list[Flagged]) -> bool:
    """Extend an open episode; returns True when its severity rose (re-published)."""
    peak = max(group, key=lambda p: p.score)
    before_rank = SEVERITY_RANK[anomaly.severity]
    anomaly.last_seen_at = group[-1].ts
    anomaly.n_points += len(group)
    escalated = peak.score > anomaly.score
    if escalated:
        anomaly.score, anomaly.kind, anomaly.metric = peak.score, peak.kind, peak.metric
        anomaly.severity = score_to_severity(peak.score)
        anomaly.features = _features(peak)
    anomaly.save()
    if escalated:
        record_change(actor=ACTOR, action="anomaly.escalate", resource_type="anomaly",
                      resource_id=anomaly.pk, operation="updated", twin=anomaly.asset.twin,
                      after=_serialize(anomaly))
    return SEVERITY_RANK[anomaly.severity] > before_rank


def _clear_quiet(asset: Asset, now_ts: datetime, gap: timedelta) -> None:
    quiet = Anomaly.objects.filter(
        asset=asset, detector=DETECTOR_NAME, status=AnomalyStatus.OPEN,
        last_seen_at__lt=now_ts - gap,
    )
    for anomaly in quiet:
        anomaly.status, anomaly.ended_at = AnomalyStatus.CLEARED, anomaly.last_seen_at
        anomaly.save(update_fields=["status", "ended_at"])
        record_change(actor=ACTOR, action="anomaly.clear", resource_type="anomaly",
                      resource_id=anomaly.pk, operation="updated", twin=asset.twin,
                      after=_serialize(anomaly))


def _apply(asset: Asset, groups: list[list[Flagged]], gap: timedelta) -> list[int]:
    """Turn episodes into Anomaly rows; return ids of anomalies that now need a response."""
    needs_response = []
    for group in groups:
        current = Anomaly.objects.filter(
            asset=asset, detector=DETECTOR_NAME, status=AnomalyStatus.OPEN,
            last_seen_at__gte=group[0].ts - gap,
        ).order_by("-last_seen_at").first()
        if current is None:
            _clear_quiet(asset, group[0].ts, gap)
            current = _open_episode(asset, group)
            rose = True
        else:
            rose = _extend_episode(current, group)
        if rose and current.severity in ("high", "critical"):
            needs_response.append(current.pk)
    return needs_response


def detect_anomalies(asset_id: int) -> list[int]:
    """Score the asset's telemetry newer than its watermark; open, extend or clear episodes.

    Concurrency: the asset's DetectionState row is locked (SELECT ... FOR UPDATE) for the whole
    run, so two workers handed the same asset score each point once. Points that arrive with a
    timestamp at or below the watermark (late data) are stored but not scored.

    Returns the ids of anomalies that reached high or critical severity in this run; the policy
    layer is told about them after commit (``policy.tasks.respond_to_anomaly``).
    """
    gap = timedelta(seconds=settings.DETECTION_EPISODE_GAP_SECONDS)
    with transaction.atomic():
        DetectionState.objects.get_or_create(asset_id=asset_id)
        state = DetectionState.objects.select_for_update().select_related("asset__twin").get(
            asset_id=asset_id
        )
        series = load_series(state.asset, after=state.scored_until,
                             history=settings.DETECTION_WINDOW)
        if len(series.new_ts) == 0:
            return []
        groups = _episodes(_flag_points(series, settings.DETECTION_WINDOW), gap)
        needs_response = _apply(state.asset, groups, gap)
        state.scored_until = _to_datetime(series.ts[-1])
        state.save(update_fields=["scored_until", "updated_at"])
        _clear_quiet(state.asset, state.scored_until, gap)
        transaction.on_commit(lambda: _enqueue_responses(needs_response))
    return needs_response


def _enqueue_responses(anomaly_ids: list[int]) -> None:
    from policy.tasks import respond_to_anomaly

    for anomaly_id in anomaly_ids:
        respond_to_anomaly.delay(anomaly_id)
