"""Versioned, signed policy documents per twin and the anti-rollback high-water mark."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PolicyDocument(models.Model):
    """One version of a twin's policy (policy.v1 body, see ``policy.rules``).

    ``body`` is stored as the exact text that was signed: the Ed25519 ``signature`` (base64,
    64 raw bytes) is over ``body.encode("utf-8")`` and is checked against the public key
    ``key_id`` pinned in ``settings.POLICY_PUBLIC_KEYS``, never against a key stored here. The
    body names its twin and version, so a signed body cannot be replayed onto another twin or
    under another version number. Rows are never updated (trigger, migration 0004): each save
    is a new version.
    """

    twin = models.ForeignKey(
        "twins.Twin", on_delete=models.CASCADE, related_name="policy_documents"
    )
    version = models.PositiveIntegerField()
    body = models.TextField()
    signature = models.TextField(blank=True)
    key_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["twin", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["twin", "version"], name="policy_version_per_twin")
        ]

    def __str__(self) -> str:
        return f"policy v{self.version} of {self.twin.slug}"


class PolicyHighWater(models.Model):
    """The highest policy version ever accepted (verified) for a twin, and its body's SHA-256.

    A twin whose newest document is below this version (a rollback: newer rows deleted) or at
    this version with another body is untrusted until a newer signed version is accepted. The
    mark only ever rises (``policy.services.documents.accept``).
    """

    twin = models.OneToOneField(
        "twins.Twin", on_delete=models.CASCADE, related_name="policy_high_water"
    )
    version = models.PositiveIntegerField()
    body_sha256 = models.CharField(max_length=64)
    accepted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.twin_id}: accepted up to v{self.version}"
