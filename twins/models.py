"""The digital twin of a plant and the assets it owns, and the ledger every change is written to.

The ledger is the bottom of the house: the audit chain (``AuditEntry``, ``AuditAnchor``) and
the change feed (``ChangeEvent``, the transactional outbox agents read through ``/diff`` and the
streams). Every event belongs to a twin's journal (or to none, for users and tokens), and every
app records its changes here through ``twins.ledger.record_change``. The tables keep their
original names (``policy_auditentry``, ``policy_auditanchor``, ``aiw_changeevent``): twins
migration 0002 moved the models without touching the data.
"""

from __future__ import annotations

from django.db import models

from twins.choices import AssetKind


class Twin(models.Model):
    """A digital twin of one plant or installation.

    ``slug`` is the ``twin_id`` used in MQTT topics (``opstwin/{twin}/{asset}/telemetry``) and in
    telemetry.v1 events. Per-twin object permissions (django-guardian: ``view_twin``,
    ``operate_twin``) scope what each user and agent sees and may do.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        permissions = [("operate_twin", "Propose, approve or execute actions on this twin")]

    def __str__(self) -> str:
        return self.name


class Asset(models.Model):
    """A piece of equipment inside a twin (a pump, a valve, ...).

    ``metrics`` is a list of metric definitions ``[{"name": "Pressure", "unit": "bar"}, ...]``;
    telemetry for metrics not listed here is rejected. ``metadata`` holds free-form facts
    (vendor, location, the replayed file for the SKAB demo).
    """

    twin = models.ForeignKey(Twin, on_delete=models.CASCADE, related_name="assets")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=AssetKind.choices, default=AssetKind.GENERIC)
    metadata = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["twin", "slug"]
        constraints = [models.UniqueConstraint(fields=["twin", "slug"], name="asset_slug_per_twin")]

    def __str__(self) -> str:
        return f"{self.twin.slug}/{self.slug}"

    @property
    def metric_names(self) -> list[str]:
        """Names of the declared metrics, in declaration order."""
        return [m["name"] for m in self.metrics]

    def unit_of(self, metric: str) -> str:
        """Unit of ``metric`` ('' when undeclared or unitless)."""
        return next((m.get("unit", "") for m in self.metrics if m["name"] == metric), "")



class AuditEntry(models.Model):
    """One link of the append-only audit chain.

    ``hash`` is computed over the canonical JSON of the entry's fields, ``prev_hash`` included:
    HMAC-SHA256 with the server's ``AUDIT_HMAC_KEY`` when ``key_id`` is set (audit.v2,
    ``twins.ledger.entry_mac``), plain SHA-256 for entries written before migration 0005
    (``key_id`` empty, audit.v1, ``twins.ledger.entry_hash``). ``seq`` is gap-free: entries are
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
        db_table = "policy_auditentry"
        ordering = ["seq"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.seq} {self.action} {self.resource_type}:{self.resource_id} by {self.actor}"


class AuditAnchor(models.Model):
    """The chain's tip (``seq``, ``hash``) as it was at ``at``: the defence against truncation.

    Deleting the newest audit entries leaves a chain that is internally consistent; only a copy
    of the tip kept elsewhere reveals it. Anchors are written periodically (Celery beat,
    ``twins.tasks.anchor_audit``) to this table (append-only, migration 0004) and, when
    ``POLICY_AUDIT_ANCHOR_FILE`` is set, appended to that file. TRUNCATE is refused too
    (migration 0005).
    """

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    at = models.DateTimeField()

    class Meta:
        db_table = "policy_auditanchor"
        ordering = ["-seq", "-at"]

    def __str__(self) -> str:
        return f"anchor at seq {self.seq} ({self.hash[:12]}…)"


class ChangeEvent(models.Model):
    """One change, written in the same transaction as the change itself (change-event.v1).

    ``id`` orders the feed. Ids are assigned under the audit chain's advisory lock, held until
    commit, so ids become visible in commit order and a reader following ``id > cursor`` can
    never skip an event that commits late (see ``twins.ledger.record_change``).
    ``data`` is the resource's new state (its schema is ``{resource_type}.v1``).
    """

    type = models.CharField(max_length=64)  # e.g. "proposal.updated"
    resource_type = models.CharField(max_length=32)
    resource_id = models.CharField(max_length=64)
    operation = models.CharField(max_length=16)  # created / updated / deleted
    twin = models.ForeignKey(
        Twin, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150)
    data = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "aiw_changeevent"
        ordering = ["id"]
        indexes = [models.Index(fields=["twin", "id"], name="change_twin_id")]

    def __str__(self) -> str:
        return f"{self.id} {self.type} {self.resource_type}:{self.resource_id}"
