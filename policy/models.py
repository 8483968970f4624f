"""Proposals (the corrective actions OpsTwin suggests) and the append-only audit chain."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from policy.choices import Decision, ProposalStatus, RiskLevel


class Proposal(models.Model):
    """A corrective action on an asset, with the evidence and the policy decision behind it.

    ``confidence_breakdown`` holds the four components of the seed's score
    (0.25 historical success + 0.25 data quality + 0.30 simulation consistency + 0.20 consensus),
    each in 0..1; ``decision_trace`` the ordered checks the policy made. Status changes only
    through ``policy.services``.
    """

    twin = models.ForeignKey("twins.Twin", on_delete=models.CASCADE, related_name="proposals")
    asset = models.ForeignKey("twins.Asset", on_delete=models.CASCADE, related_name="proposals")
    anomaly = models.ForeignKey(
        "telemetry.Anomaly", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="proposals",
    )
    simulation = models.ForeignKey(
        "simulation.SimulationRun", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="proposals",
    )
    action = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    risk_level = models.CharField(max_length=16, choices=RiskLevel.choices)
    confidence = models.FloatField()
    confidence_breakdown = models.JSONField(default=dict)
    decision = models.CharField(max_length=32, choices=Decision.choices)
    decision_trace = models.JSONField(default=list)
    status = models.CharField(
        max_length=32, choices=ProposalStatus.choices, default=ProposalStatus.PROPOSED
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    execution = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_proposal", "Approve or reject proposals"),
            ("execute_proposal", "Execute approved proposals"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="proposal_status_created")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} on {self.asset} ({self.status})"


class AuditEntry(models.Model):
    """One link of the append-only audit chain (audit.v1).

    ``hash`` = SHA-256 over the canonical JSON of the entry's fields plus ``prev_hash``
    (see ``policy.audit.entry_hash``). ``seq`` is gap-free: entries are written under one
    PostgreSQL advisory lock, which also orders the change feed.
    """

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=150)
    role = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=32)
    resource_id = models.CharField(max_length=64)
    twin_slug = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    client_address = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.seq} {self.action} {self.resource_type}:{self.resource_id} by {self.actor}"
