"""Proposals (the corrective actions OpsTwin suggests) and the human approvals they collect."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from policy.choices import Decision, ProposalStatus, RiskLevel


class Proposal(models.Model):
    """A corrective action on an asset, with the evidence and the policy decision behind it.

    ``confidence_breakdown`` holds the four components of the seed's score
    (0.25 historical success + 0.25 data quality + 0.30 simulation consistency + 0.20 consensus),
    each in 0..1; ``decision_trace`` the ordered checks the policy made (decision.v1).
    ``evidence`` is the asset state the decision was made on (``policy.state``:
    ``{"taken_at", "simulation", "state": {metric: {"value", "ts", "received_at"}},
    "tolerance": {metric: float}}``); drift beyond ``tolerance`` sets ``stale_at`` and blocks
    approval and execution until ``resimulate_proposal``. ``expires_at`` is when a pending
    proposal or its approvals lapse (TTL per risk level). ``execution``/``rollback`` hold the
    command outcomes (delivery = broker PUBACK, effect = the asset's ack), ``verification`` the
    post-execution check against the simulated p5–p95 band. ``revision`` rises with every
    transition. Status changes only through ``policy.services``.
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
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    policy_trusted = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    evidence = models.JSONField(default=dict, blank=True)
    stale_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    rollback_action = models.CharField(max_length=64, blank=True)
    rollback_started_at = models.DateTimeField(null=True, blank=True)
    rollback = models.JSONField(null=True, blank=True)
    verification = models.JSONField(null=True, blank=True)
    verify_until = models.DateTimeField(null=True, blank=True)
    revision = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_proposal", "Approve or reject proposals"),
            ("execute_proposal", "Execute approved proposals"),
            ("rollback_proposal", "Roll back executed proposals"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="proposal_status_created"),
            models.Index(fields=["status", "expires_at"], name="proposal_status_expires"),
            # The overview's "what just happened": newest first, whatever the status.
            models.Index(fields=["created_at"], name="proposal_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} on {self.asset} ({self.status})"

    @property
    def is_stale(self) -> bool:
        """True once the evidence drifted (until a re-simulation records fresh evidence)."""
        return self.stale_at is not None


class Approval(models.Model):
    """One human's approval of a proposal (four eyes; CRITICAL needs two distinct approvers).

    An approval counts while ``invalidated_at`` is unset (a re-simulation voids it: it was
    given on other evidence) and ``expires_at`` (approval time + the risk level's TTL) lies in
    the future. One live approval per (proposal, approver).
    """

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    role = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    invalidated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["proposal", "approver"], condition=models.Q(invalidated_at__isnull=True),
                name="one_live_approval_per_approver",
            )
        ]

    def __str__(self) -> str:
        return f"approval of #{self.proposal_id} by {self.approver_id}"
