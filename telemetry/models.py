"""Telemetry storage (narrow rows built for aggregation), dead letters and anomalies."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from telemetry.choices import AnomalyKind, AnomalyStatus, IngestSource, Quality, Severity
from twins.choices import AssetKind
from twins.models import Asset


class TelemetryEvent(models.Model):
    """One accepted telemetry.v1 event: the de-duplication key and the event's envelope.

    ``event_id`` is the primary key, so a redelivered event is dropped by
    ``INSERT ... ON CONFLICT DO NOTHING`` before any of its samples are written.
    """

    event_id = models.UUIDField(primary_key=True)
    # Like TelemetrySample.asset: no per-row FK check at commit, no index duplicating
    # (asset, ts) below. Ingest resolves the asset first; Django still cascades deletes.
    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="events",
                              db_constraint=False, db_index=False)
    ts = models.DateTimeField()
    quality = models.CharField(max_length=16, choices=Quality.choices, default=Quality.GOOD)
    tags = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=16, choices=IngestSource.choices)
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["asset", "ts"], name="tevent_asset_ts"),
            # The last reading by receipt time (policy.state.latest_reading): interlocks and
            # evidence read the asset's most recently received events, newest first.
            models.Index(fields=["asset", "received_at", "ts"], name="tevent_asset_received"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.asset_id} @ {self.ts.isoformat()}"


class TelemetrySample(models.Model):
    """One value of one metric of one asset at one instant: the narrow row.

    Shape: (ts timestamptz, asset_id bigint, metric varchar(64), value float8). Indexed by
    (asset, metric, ts) for per-series time-range queries. On TimescaleDB this table becomes a
    hypertable partitioned by ``ts`` (see ``telemetry.storage``). Units are the asset's declared
    metric units. Rows are written by ``telemetry.services.ingest_batch`` only, with COPY.
    """

    ts = models.DateTimeField()
    # No database FK constraint and no index of its own: a deferred FK check per row capped COPY
    # at ~0.1 M rows/s, and (asset, metric, ts) already serves every lookup by asset. Ingest
    # resolves the asset first; Django still cascades deletes from Asset.
    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="samples",
                              db_constraint=False, db_index=False)
    metric = models.CharField(max_length=64)
    value = models.FloatField()

    class Meta:
        indexes = [
            models.Index(fields=["asset", "metric", "ts"], name="tsample_series_ts"),
            BrinIndex(fields=["ts"], name="tsample_ts_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.asset_id}/{self.metric}={self.value} @ {self.ts.isoformat()}"


class DeadLetter(models.Model):
    """A payload that could not be accepted, kept whole with the reason (nothing is lost)."""

    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=IngestSource.choices)
    topic = models.CharField(max_length=512, blank=True)
    payload = models.TextField()
    reason = models.TextField()

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"dead letter {self.pk} ({self.source}): {self.reason[:60]}"


class Anomaly(models.Model):
    """An anomaly episode on one asset (anomaly.v1): consecutive flagged points, not one row each.

    ``score`` is in 0..1 (rolling z-score: min(1, |z|/5)); ``severity`` follows the seed thresholds
    (score >= 0.95 critical, >= 0.85 high, >= 0.70 medium, else low). ``features`` holds the
    evidence: the peak value, the window mean and std, |z|, and per-metric contributions.
    ``metric`` is the metric that contributed most at the peak. ``consensus`` is the detector
    consensus computed when the episode opened (``telemetry.consensus.votes_on``: share in
    0..1, per-detector votes over the applicable detectors); None for anomalies opened before
    it was stored, or when computing it failed.
    """

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="anomalies")
    metric = models.CharField(max_length=64)
    detector = models.CharField(max_length=32)
    kind = models.CharField(max_length=16, choices=AnomalyKind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    score = models.FloatField()
    status = models.CharField(
        max_length=16, choices=AnomalyStatus.choices, default=AnomalyStatus.OPEN
    )
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    n_points = models.PositiveIntegerField(default=1)
    features = models.JSONField(default=dict)
    consensus = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    ack_comment = models.TextField(blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["asset", "status"], name="anomaly_asset_status")]
        verbose_name_plural = "anomalies"
        permissions = [("acknowledge_anomaly",
                        "Acknowledge anomalies (with operate rights on the twin)")]

    def __str__(self) -> str:
        return f"{self.severity} {self.kind} on {self.asset} ({self.metric})"


class DetectionState(models.Model):
    """Per-asset watermark: telemetry up to ``scored_until`` has been through detection.

    Also the asset's detection health: ``failures`` counts runs that raised (detection, or the
    response it hands over), ``last_error``/``last_error_at`` describe the latest one
    (``telemetry.detection.record_failure``). ``updated_at`` moves on each successful scoring.
    """

    asset = models.OneToOneField(Asset, on_delete=models.CASCADE, related_name="detection_state")
    scored_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.asset_id} scored until {self.scored_until}"


class DetectorConfig(models.Model):
    """Which detector (and parameters) watches assets of one kind; editable in admin.

    ``detector`` is a name from ``telemetry.detectors.DETECTORS``; ``params`` its keyword
    parameters; ``calibration_rows`` how many first rows of an asset fit its normal model
    (SKAB convention: 400). Detectors other than ``zscore`` score nothing before calibration.
    """

    asset_kind = models.CharField(max_length=32, choices=AssetKind.choices, unique=True)
    detector = models.CharField(max_length=32)
    params = models.JSONField(default=dict, blank=True)
    calibration_rows = models.PositiveIntegerField(default=400)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.asset_kind}: {self.detector} {self.params}"

    def clean(self) -> None:
        """Refuse a detector name or parameters the detector library would reject."""
        from django.core.exceptions import ValidationError

        from telemetry.detectors import build_detector

        try:
            build_detector(self.detector, self.params)
        except ValueError as exc:
            raise ValidationError({"params": str(exc)}) from exc


class AssetCalibration(models.Model):
    """An asset's fitted normal model: the detector's JSON state and where it came from.

    ``start``/``end`` bound the calibration window (the first N rows, or a declared normal
    period); ``state`` is ``detector.to_state()``.
    """

    asset = models.OneToOneField(Asset, on_delete=models.CASCADE, related_name="calibration")
    detector = models.CharField(max_length=32)
    params = models.JSONField(default=dict)
    state = models.JSONField()
    n_rows = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    fitted_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.detector} calibration of {self.asset_id} ({self.n_rows} rows)"


class DetectorStreamState(models.Model):
    """What a streaming detector remembers about one asset between detection runs.

    One row per (asset, metric); ``metric = ""`` holds the asset-level state written by
    ``telemetry.streaming.stream_score``: ``state["carry"]`` the detector's stream carry
    (``BaseDetector.score_stream``: EWMA level / CUSUM sums per metric, step count, adaptive
    reference, tail of statistics), ``state["onset"]`` the alert onset filter
    (``OnsetFilter``: armed, quiet, since), ``state["calibration"]`` and ``state["until"]``
    the calibration and last scored row they continue from. ``detector``/``params`` are the
    configuration it belongs to (a changed configuration starts afresh), ``rows_seen`` the rows
    scored so far and ``interval_seconds`` the asset's inferred sampling interval (median
    positive gap, ``sampling_interval``), from which every duration of detection is derived.
    """

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="stream_states")
    metric = models.CharField(max_length=128, blank=True)
    detector = models.CharField(max_length=32)
    params = models.JSONField(default=dict)
    state = models.JSONField(default=dict)
    rows_seen = models.BigIntegerField(default=0)
    interval_seconds = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["asset", "metric"], name="stream_state_asset_metric"),
        ]

    def __str__(self) -> str:
        return f"{self.detector} state of {self.asset_id}/{self.metric or '*'}"
