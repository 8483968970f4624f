"""The change feed: a transactional outbox of every state change (change-event.v1)."""

from __future__ import annotations

from django.db import models


class ChangeEvent(models.Model):
    """One change, written in the same transaction as the change itself.

    ``id`` orders the feed. Ids are assigned under the audit chain's advisory lock, held until
    commit, so ids become visible in commit order and a reader following ``id > cursor`` can
    never skip an event that commits late (see ``policy.audit.record_change``).
    ``data`` is the resource's new state (its schema is ``{resource_type}.v1``).
    """

    type = models.CharField(max_length=64)  # e.g. "proposal.updated"
    resource_type = models.CharField(max_length=32)
    resource_id = models.CharField(max_length=64)
    operation = models.CharField(max_length=16)  # created / updated / deleted
    twin = models.ForeignKey(
        "twins.Twin", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150)
    data = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["twin", "id"], name="change_twin_id")]

    def __str__(self) -> str:
        return f"{self.id} {self.type} {self.resource_type}:{self.resource_id}"
