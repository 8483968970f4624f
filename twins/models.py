"""The digital twin of a plant and the assets it owns."""

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
