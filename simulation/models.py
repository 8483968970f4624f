"""Stored what-if simulation runs."""

from __future__ import annotations

from django.db import models


class SimulationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class SimulationRun(models.Model):
    """One simulation (simulation.v1): its request, seed, engine, outputs and timing.

    ``request`` is the validated JSON request (inputs with their distributions, the action,
    constraints); ``result`` the engine's output dict (per-metric mean/std/p5..p99, histogram,
    P(breach) per constraint, convergence). ``progress`` is 0..1 while running.
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
    engine = models.CharField(max_length=32, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    n_samples = models.PositiveIntegerField(null=True, blank=True)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"simulation {self.pk} ({self.status})"


class WhatIfModel(models.Model):
    """The fitted what-if model of one asset (e.g. the SKAB pump's least-squares relations).

    ``state`` is the engine's JSON model (``PumpModel.to_state()``), ``fit_report`` its fit
    quality (R², residual std per metric), ``bands`` the normal operating band per metric
    (calibration mean ± 3 std, in the metric's unit) used as the what-if constraints.
    """

    asset = models.OneToOneField(
        "twins.Asset", on_delete=models.CASCADE, related_name="whatif_model"
    )
    kind = models.CharField(max_length=32, default="pump")
    state = models.JSONField()
    fit_report = models.JSONField(default=dict)
    bands = models.JSONField(default=dict)
    n_rows = models.PositiveIntegerField()
    fitted_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.kind} model of {self.asset}"
