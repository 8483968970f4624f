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
    updated_at = models.DateTimeField(auto_now=True)
    #: Bumped by every change through ``twins.services`` (the API's ETag; If-Match checks it).
    revision = models.PositiveBigIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["slug"]
        permissions = [("operate_twin", "Propose, approve or execute actions on this twin")]

    def __str__(self) -> str:
        return self.name


class AssetType(models.Model):
    """A kind of equipment as data: its metrics, actions, detector and what-if model.

    ``base_kind`` is the built-in behaviour the type extends (``AssetKind``: the action
    catalogue and what-if model families the code knows). ``metrics`` declares each metric
    ``{"name", "unit", "min", "max", "cadence_seconds"}`` (only ``name`` required; ``min``/``max``
    the physically valid range, ``cadence_seconds`` the expected sampling interval used for
    liveness). ``actions`` lists the catalogue actions offered on assets of this type,
    ``[{"action": "reduce_load", "risk_level": "HIGH"}, ...]`` (an optional ``risk_level``
    raises or lowers the catalogue's default; empty list: every action of the base kind).
    ``detector``/``detector_params`` name the anomaly detector (empty: the base kind's
    configuration) and ``whatif_model`` the what-if model family (``""`` auto, ``"pump"``,
    ``"generic"``). The apps that own those names validate them (``twins.asset_types``).
    Admins edit types in Django admin through ``twins.services``: every change bumps
    ``revision`` and is audited (asset-type.v1 on the feed).
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    base_kind = models.CharField(max_length=32, choices=AssetKind.choices,
                                 default=AssetKind.GENERIC)
    metrics = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list, blank=True)
    detector = models.CharField(max_length=32, blank=True)
    detector_params = models.JSONField(default=dict, blank=True)
    whatif_model = models.CharField(max_length=32, blank=True)
    revision = models.PositiveBigIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Validate metrics, actions, detector and what-if model (``twins.asset_types``)."""
        from twins.asset_types import validate_asset_type

        validate_asset_type(self)


def declared_metrics(own: list[dict] | None, of_type: list[dict] | None) -> list[dict]:
    """The metric definitions an asset declares: its own ``metrics`` when not empty, else its
    type's (``None``: no type), else ``[]``. ``Asset.declared_metrics`` and ingest's asset
    lookup (``telemetry.services``, which reads both columns without the ORM) share this rule.
    """
    return own or of_type or []


class Asset(models.Model):
    """A piece of equipment inside a twin (a pump, a valve, a line, a traffic sensor, ...).

    ``asset_type`` gives its metrics, actions, detector and what-if model; ``kind`` mirrors the
    type's ``base_kind`` (set by ``twins.services.save_asset``). ``metrics`` overrides the
    type's metric list when not empty (``declared_metrics``); telemetry for undeclared metrics
    is rejected. ``parent`` places it in the twin's hierarchy (site → line → machine; same twin,
    no cycles). ``desired`` is the state OpsTwin last commanded (``twins.state``), ``revision``
    counts changes to the asset's definition and desired state (the API's ETag).
    """

    twin = models.ForeignKey(Twin, on_delete=models.CASCADE, related_name="assets")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=AssetKind.choices, default=AssetKind.GENERIC)
    asset_type = models.ForeignKey(AssetType, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="assets")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                               related_name="children")
    metadata = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=list, blank=True)
    desired = models.JSONField(default=dict, blank=True, editable=False)
    revision = models.PositiveBigIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["twin", "slug"]
        constraints = [models.UniqueConstraint(fields=["twin", "slug"], name="asset_slug_per_twin")]

    def __str__(self) -> str:
        return f"{self.twin.slug}/{self.slug}"

    @property
    def declared_metrics(self) -> list[dict]:
        """The asset's own metric definitions, else its type's (``[]`` when neither)."""
        return declared_metrics(self.metrics,
                                self.asset_type.metrics if self.asset_type_id else None)

    @property
    def metric_names(self) -> list[str]:
        """Names of the declared metrics, in declaration order."""
        return [m["name"] for m in self.declared_metrics]

    def unit_of(self, metric: str) -> str:
        """Unit of ``metric`` ('' when undeclared or unitless)."""
        return next((m.get("unit", "") for m in self.declared_metrics if m["name"] == metric),
                    "")


class ReportedMetric(models.Model):
    """The last reading of one metric of an asset: the reported half of its state.

    Written by ingest in the transaction that stores the samples (``twins.state.
    record_reported``): ``value`` and ``ts`` (sensor time) only move forward in sensor time, so
    a late, older sample never replaces a newer one; ``received_at`` (server clock at commit)
    always moves, and liveness is judged on it, never on the sensor's clock.
    ``cadence_seconds`` is the sampling interval seen so far (an exponentially weighted mean
    of the gaps between readings, sensor time), used when the asset type declares none.
    """

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="reported")
    metric = models.CharField(max_length=64)
    value = models.FloatField()
    ts = models.DateTimeField()
    received_at = models.DateTimeField()
    cadence_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["asset", "metric"]
        constraints = [models.UniqueConstraint(fields=["asset", "metric"],
                                               name="reported_metric_per_asset")]

    def __str__(self) -> str:
        return f"{self.asset_id}.{self.metric} = {self.value:g} at {self.ts.isoformat()}"


class StatePublication(models.Model):
    """When an asset's state was last put on the feed, and the liveness it said.

    ``twins.state.publish_states`` coalesces: at most one ``asset.state`` event per asset per
    ``ASSET_STATE_MIN_INTERVAL_SECONDS``, whatever the number of readings in between.
    """

    asset = models.OneToOneField(Asset, on_delete=models.CASCADE, primary_key=True,
                                 related_name="publication")
    published_at = models.DateTimeField()
    received_at = models.DateTimeField(null=True, blank=True)
    liveness = models.CharField(max_length=16)
    revision = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.asset_id} published at {self.published_at.isoformat()} ({self.liveness})"


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
    hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        db_table = "policy_auditentry"
        ordering = ["seq"]
        # A resource's history (the state of an asset at a past time, twins.state).
        indexes = [models.Index(fields=["resource_type", "resource_id", "seq"],
                                name="audit_resource_seq")]
        # A constraint, not ``unique=True``: that would add a second, ``LIKE`` index on the
        # hash that no query uses and every append pays for (migration 0005).
        constraints = [models.UniqueConstraint(fields=["hash"], name="audit_hash_unique")]
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
    # No index of its own: ``change_twin_id`` (twin, id) starts with it (migration 0005).
    twin = models.ForeignKey(
        Twin, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_index=False,
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
