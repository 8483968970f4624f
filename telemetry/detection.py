"""Detection service: score new telemetry of an asset and keep anomaly episodes up to date.

The detector comes from the asset kind's DetectorConfig (``telemetry.calibration``): the
seed's rolling z-score (each point against the ``DETECTION_WINDOW`` points before it, |z| >= 3,
score = min(1, |z|/5)) or a calibrated one (MAD, EWMA, CUSUM, PCA T²+Q). Flagged points of one
kind no more than the episode gap apart form one episode (``telemetry.streaming.episode_gap``:
the detector's ``rearm`` or 30 sampling intervals of the asset's own data): there is at most
one open anomaly per (asset, kind), extended while the fault lasts and cleared once the
signal has been normal for the gap.

Isolation: ``detect_isolated`` (what the Celery task and the ingest hook run) never lets one
asset's failure reach its caller. The traceback is logged, the failure counted and described
on the asset's ``DetectionState`` (``failures``, ``last_error``, ``last_error_at``; shown on the
asset page and in ``GET /telemetry/ingest/status``), and the other assets are scored as usual.
Nothing is lost: the watermark only moves when a run commits, so the next batch re-scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from telemetry import handoff
from telemetry.calibration import Watch, watch_for
from telemetry.choices import AnomalyStatus, Severity
from telemetry.consensus import consensus_on_open
from telemetry.detectors import score_to_severity
from telemetry.models import Anomaly, DetectionState
from telemetry.series import Series, load_series
from telemetry.streaming import episode_gap, stream_score
from twins.ledger import jsonable, record_changes
from twins.models import Asset

log = logging.getLogger(__name__)
ACTOR = "detector"
ERROR_MAX_CHARS = 2000
SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
ACTIVE = [AnomalyStatus.OPEN, AnomalyStatus.ACKNOWLEDGED]


@dataclass
class Flagged:
    """One flagged point: time, score 0..1, statistic, kind, top metric, evidence."""

    ts: datetime
    score: float
    statistic: float
    threshold: float
    kind: str
    metric: str
    value: float
    baseline_mean: float
    baseline_std: float
    contributions: dict[str, float]


def _to_datetime(ts: np.datetime64) -> datetime:
    return ts.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def _baseline(series: Series, watch: Watch, row: int, j: int) -> tuple[float, float]:
    """Calibration mean/std of metric j, or (z-score) of the window before ``row``."""
    stats = watch.baseline.get(series.metrics[j])
    if stats:
        return stats["mean"], stats["std"]
    past = series.X[max(0, row - settings.DETECTION_WINDOW) : row, j]
    return float(past.mean()), float(past.std(ddof=1)) if len(past) > 1 else 0.0


def _flag_points(series: Series, watch: Watch, asset: Asset) -> list[Flagged]:
    out, found = stream_score(asset, watch, series)  # state carried across calls
    flags = out.flags if found is None else out.flags & found.active  # one episode per onset
    flagged = []
    for i in np.flatnonzero(flags):
        row, j = series.n_history + i, int(out.metric_index[i])
        mean, std = _baseline(series, watch, row, j)
        flagged.append(Flagged(
            ts=_to_datetime(series.ts[row]), score=float(out.score[i]),
            statistic=float(out.statistic[i]), threshold=float(out.threshold),
            kind=str(out.kind[i]), metric=series.metrics[j], value=float(series.X[row, j]),
            baseline_mean=mean, baseline_std=std,
            contributions={m: round(float(c), 4) for m, c in
                           zip(series.metrics, out.contributions[i], strict=True)},
        ))
    return flagged


def _episodes(points: list[Flagged], gap: timedelta) -> list[list[Flagged]]:
    """Group flagged points by kind, then into runs no more than ``gap`` apart."""
    groups: list[list[Flagged]] = []
    for kind in sorted({p.kind for p in points}):
        current: list[Flagged] = []
        for point in (p for p in points if p.kind == kind):
            if current and point.ts - current[-1].ts > gap:
                groups.append(current)
                current = []
            current.append(point)
        groups.append(current)
    return sorted((g for g in groups if g), key=lambda g: g[0].ts)


def _features(peak: Flagged, detector: str) -> dict:
    return {
        "detector": detector, "value": peak.value, "baseline_mean": peak.baseline_mean,
        "baseline_std": peak.baseline_std, "statistic": peak.statistic,
        "threshold": peak.threshold, "peak_at": peak.ts.isoformat(),
        "contributions": peak.contributions,
    }


def serialize(anomaly: Anomaly) -> dict:
    """anomaly.v1 of ``anomaly``."""
    from telemetry.api.serializers import AnomalySerializer

    return dict(AnomalySerializer(anomaly).data)


def _publish(changes: list[dict], anomaly: Anomaly, action: str,
             operation: str = "updated") -> None:
    """Queue the change of ``anomaly`` as it is now (anomaly.v1) on ``changes``: a detection
    run records all of them at its end with one ``record_changes`` (one lock acquisition)."""
    changes.append({"actor": ACTOR, "action": action, "resource_type": "anomaly",
                    "resource_id": anomaly.pk, "operation": operation,
                    "twin": anomaly.asset.twin, "after": jsonable(serialize(anomaly))})


def _open_episode(changes: list[dict], asset: Asset, group: list[Flagged],
                  detector: str) -> Anomaly:
    peak = max(group, key=lambda p: p.score)
    anomaly = Anomaly.objects.create(
        asset=asset, metric=peak.metric, detector=detector, kind=peak.kind,
        severity=score_to_severity(peak.score), score=peak.score, started_at=group[0].ts,
        last_seen_at=group[-1].ts, n_points=len(group), features=_features(peak, detector),
        consensus=consensus_on_open(asset, started_at=group[0].ts, last_seen_at=group[-1].ts),
    )
    _publish(changes, anomaly, "anomaly.open", "created")
    return anomaly


def _extend_episode(changes: list[dict], anomaly: Anomaly, group: list[Flagged],
                    detector: str) -> bool:
    """Extend an active episode; returns True when its severity rose (re-published)."""
    peak = max(group, key=lambda p: p.score)
    before_rank = SEVERITY_RANK[anomaly.severity]
    anomaly.last_seen_at = group[-1].ts
    anomaly.n_points += len(group)
    if peak.score > anomaly.score:
        anomaly.score, anomaly.metric = peak.score, peak.metric
        anomaly.severity = score_to_severity(peak.score)
        anomaly.features = _features(peak, detector)
    anomaly.save()
    rose = SEVERITY_RANK[anomaly.severity] > before_rank
    if rose:
        _publish(changes, anomaly, "anomaly.escalate")
    return rose


def _clear_quiet(changes: list[dict], asset: Asset, now_ts: datetime, gap: timedelta,
                 kind: str | None = None) -> None:
    quiet = Anomaly.objects.filter(asset=asset, status__in=ACTIVE,
                                   last_seen_at__lt=now_ts - gap)
    for anomaly in quiet.filter(kind=kind) if kind else quiet:
        anomaly.status, anomaly.ended_at = AnomalyStatus.CLEARED, anomaly.last_seen_at
        anomaly.save(update_fields=["status", "ended_at"])
        _publish(changes, anomaly, "anomaly.clear")


def _apply(changes: list[dict], asset: Asset, groups: list[list[Flagged]], gap: timedelta,
           detector: str) -> list[int]:
    """Turn episodes into Anomaly rows, queueing their changes on ``changes``; return ids of
    anomalies that now need a response."""
    needs_response = []
    for group in groups:
        kind = group[0].kind
        _clear_quiet(changes, asset, group[0].ts, gap, kind)
        current = Anomaly.objects.filter(asset=asset, kind=kind, status__in=ACTIVE).first()
        if current is None:
            current, rose = _open_episode(changes, asset, group, detector), True
        else:
            rose = _extend_episode(changes, current, group, detector)
        if rose and current.severity in (Severity.HIGH, Severity.CRITICAL):
            needs_response.append(current.pk)
    return needs_response


def _locked_state(asset_id: int) -> DetectionState:
    DetectionState.objects.get_or_create(asset_id=asset_id)
    # of=("self",): lock only the watermark row, not the asset and twin rows joined in.
    locked = DetectionState.objects.select_for_update(of=("self",))
    return locked.select_related("asset__twin").get(asset_id=asset_id)


def detect_anomalies(asset_id: int) -> list[int]:
    """Score the asset's telemetry newer than its watermark; open, extend or clear episodes.

    Concurrency: the asset's DetectionState row is locked (SELECT ... FOR UPDATE) for the whole
    run, so two workers handed the same asset score each point once. Rows inside the
    calibration window are never scored; points that arrive at or below the watermark (late
    data) are stored but not scored.

    Returns the ids of anomalies that reached high or critical severity in this run; the policy
    layer is told about them after commit (``telemetry.handoff``, stage ``RESPOND``).
    """
    with transaction.atomic():
        state = _locked_state(asset_id)
        watch = watch_for(state.asset)
        if watch is None:
            return []  # still collecting the calibration window
        after = state.scored_until
        if watch.calibration and (after is None or after < watch.calibration.end):
            after = watch.calibration.end
        series = load_series(state.asset, after=after, history=watch.detector.history_length)
        if len(series.new_ts) == 0:
            return []
        gap = episode_gap(watch.detector, series.ts, state.asset)
        groups = _episodes(_flag_points(series, watch, state.asset), gap)
        changes: list[dict] = []
        needs_response = _apply(changes, state.asset, groups, gap, watch.name)
        state.scored_until = _to_datetime(series.ts[-1])
        state.save(update_fields=["scored_until", "updated_at"])
        _clear_quiet(changes, state.asset, state.scored_until, gap)
        # Every anomaly opened, escalated or cleared in this run, audited and on the feed in
        # the order it happened, under one acquisition of the sequencing lock (held to commit)
        # taken only now, after the scoring.
        record_changes(changes)
        transaction.on_commit(lambda: handoff.send(handoff.RESPOND, needs_response))
    return needs_response



def record_failure(asset_id: int, error: BaseException | str, *, stage: str = "") -> None:
    """Count a failed detection run of ``asset_id`` and keep its error, in its own transaction.

    ``last_error`` reads "[<stage>: ]<ExceptionType>: <message>" (at most ``ERROR_MAX_CHARS``);
    ``last_error_at`` is now. Never raises: a failure to record is logged (the asset may
    have been deleted meanwhile, or the database be unreachable).
    """
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = (f"{stage}: {text}" if stage else text)[:ERROR_MAX_CHARS].replace("\x00", "")
    try:
        with transaction.atomic():
            DetectionState.objects.get_or_create(asset_id=asset_id)
            DetectionState.objects.filter(asset_id=asset_id).update(
                failures=F("failures") + 1, last_error=text, last_error_at=timezone.now())
    except Exception:
        log.exception("could not record the detection failure of asset %s", asset_id)


def detect_isolated(asset_id: int) -> list[int]:
    """``detect_anomalies`` for one asset, never raising: what the task and ingest run.

    Returns the anomaly ids that need a response, or [] when the run failed; a failure is
    logged with its traceback and recorded by ``record_failure``.
    """
    try:
        return detect_anomalies(asset_id)
    except Exception as exc:
        log.exception("detection of asset %s failed", asset_id)
        record_failure(asset_id, exc)
        return []


def detection_failures(twins, *, limit: int = 100) -> dict:
    """Detection health of the assets of ``twins`` (a Twin queryset) for the ingest status.

    Returns ``{"failures": total count, "assets": [{"twin", "asset", "failures", "last_error",
    "last_error_at", "scored_until"}]}``, assets with at least one failure, the most recent
    failure first, at most ``limit`` of them.
    """
    failing = (DetectionState.objects.filter(asset__twin__in=twins, failures__gt=0)
               .select_related("asset__twin").order_by("-last_error_at"))
    total = sum(failing.values_list("failures", flat=True))
    return {"failures": total, "assets": [
        {"twin": s.asset.twin.slug, "asset": s.asset.slug, "failures": s.failures,
         "last_error": s.last_error, "last_error_at": s.last_error_at,
         "scored_until": s.scored_until}
        for s in failing[:limit]]}
