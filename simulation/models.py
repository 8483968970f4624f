"""Stored what-if simulation runs and the fitted what-if model of each asset."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SimulationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = (SimulationStatus.SUCCEEDED, SimulationStatus.FAILED,
                     SimulationStatus.CANCELLED)


class SimulationRun(models.Model):
    """One simulation (simulation.v1): its request, seed, engine, outputs and timing.

    ``request`` is the JSON request as run (the engine's shape, :mod:`simulation.engine.request`;
    a drawn ``seed`` and, for an asset's pump what-if, the fitted model and calibrated state are
    filled in, so the run can be reproduced from it alone); ``result`` the engine's output dict
    (per-metric mean/std/p5..p99 and histogram, P(breach) per constraint, ``engine_used``,
    ``engine_reason``, ``cost``, ``elapsed_s`` in seconds). ``engine_requested`` is what the
    caller asked for (``auto``, ``monte_carlo``, ``quantum_iae``), ``engine`` the engine the
    router chose, ``engine_reason`` why.

    Progress while running: ``samples_done`` of ``samples_target`` (Monte Carlo samples, or
    quantum shots) and ``progress = samples_done / samples_target`` in 0..1. The target is the
    current round's: it grows when the convergence loop doubles the sample count, so progress
    can step back. ``cancel_requested_at`` is the flag a running job polls; the run then ends
    ``cancelled``.
    """

    asset = models.ForeignKey(
        "twins.Asset", null=True, blank=True, on_delete=models.CASCADE, related_name="simulations"
    )
    anomaly = models.ForeignKey(
        "telemetry.Anomaly",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="simulations",
    )
    status = models.CharField(
        max_length=16, choices=SimulationStatus.choices, default=SimulationStatus.QUEUED
    )
    request = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    engine_requested = models.CharField(max_length=32, blank=True)
    engine = models.CharField(max_length=32, blank=True)
    engine_reason = models.TextField(blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    n_samples = models.PositiveIntegerField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    samples_done = models.PositiveBigIntegerField(default=0)
    samples_target = models.PositiveBigIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"simulation {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_s(self) -> float | None:
        """Wall time from start to finish (seconds), None until finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class WhatIfModel(models.Model):
    """The fitted what-if model of one asset (e.g. the SKAB pump's least-squares relations).

    ``state`` is the engine's JSON model (``PumpModel.to_state()``), ``fit_report`` its fit
    quality (``PumpModel.fit_report()``: R², residual std in the metric's unit, slopes per
    metric), ``bands`` the normal operating band per metric (training mean ± 3 std, in the
    metric's unit) used as the what-if constraints. ``normal_from``/``normal_to`` bound the
    declared normal-operation period it was fitted on (both None: the asset's first
    ``n_rows`` readings, SKAB's convention).
    """

    asset = models.OneToOneField(
        "twins.Asset", on_delete=models.CASCADE, related_name="whatif_model"
    )
    kind = models.CharField(max_length=32, default="pump")
    state = models.JSONField()
    fit_report = models.JSONField(default=dict)
    bands = models.JSONField(default=dict)
    n_rows = models.PositiveIntegerField()
    normal_from = models.DateTimeField(null=True, blank=True)
    normal_to = models.DateTimeField(null=True, blank=True)
    fitted_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.kind} model of {self.asset}"
