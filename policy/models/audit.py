"""The append-only audit chain and its anchors."""

from __future__ import annotations

from django.db import models


class AuditEntry(models.Model):
    """One link of the append-only audit chain.

    ``hash`` is computed over the canonical JSON of the entry's fields, ``prev_hash`` included:
    HMAC-SHA256 with the server's ``AUDIT_HMAC_KEY`` when ``key_id`` is set (audit.v2,
    ``policy.audit.entry_mac``), plain SHA-256 for entries written before migration 0005
    (``key_id`` empty, audit.v1, ``policy.audit.entry_hash``). ``seq`` is gap-free: entries are
    written under one PostgreSQL advisory lock, which also orders the change feed. Triggers
    refuse UPDATE and DELETE (migration 0002) and TRUNCATE (migration 0005) on the table.
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
    key_id = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.seq} {self.action} {self.resource_type}:{self.resource_id} by {self.actor}"


class AuditAnchor(models.Model):
    """The chain's tip (``seq``, ``hash``) as it was at ``at``: the defence against truncation.

    Deleting the newest audit entries leaves a chain that is internally consistent; only a copy
    of the tip kept elsewhere reveals it. Anchors are written periodically (Celery beat,
    ``policy.tasks.anchor_audit``) to this table (append-only, migration 0004) and, when
    ``POLICY_AUDIT_ANCHOR_FILE`` is set, appended to that file. TRUNCATE is refused too
    (migration 0005).
    """

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-seq", "-at"]

    def __str__(self) -> str:
        return f"anchor at seq {self.seq} ({self.hash[:12]}…)"
