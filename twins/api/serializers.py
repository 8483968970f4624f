"""twin.v1, asset-type.v1 and asset.v1: the API's bodies and the feed's event data.

Writable fields are what an API client may send; ``id``, ``revision`` and the timestamps are
the server's. An asset names its twin, type and parent by slug (the parent is an asset of the
same twin).
"""

from django.db import models
from rest_framework import serializers

from twins.models import Asset, AssetType, Twin


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text (the
    schema says string, so ``"name": 0`` is a 400, not the name "0")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField, StrictCharField):
    """A SlugField with ``StrictCharField``'s type check."""


class StrictModelSerializer(serializers.ModelSerializer):
    """ModelSerializer whose text fields accept JSON strings only."""

    serializer_field_mapping = serializers.ModelSerializer.serializer_field_mapping | {
        models.CharField: StrictCharField, models.TextField: StrictCharField,
        models.SlugField: StrictSlugField}


class TwinSerializer(StrictModelSerializer):
    """twin.v1."""

    class Meta:
        model = Twin
        fields = ["id", "slug", "name", "description", "revision", "created_at", "updated_at"]
        read_only_fields = ["id", "revision", "created_at", "updated_at"]


class AssetTypeSerializer(StrictModelSerializer):
    """asset-type.v1."""

    class Meta:
        model = AssetType
        fields = ["id", "slug", "name", "description", "base_kind", "metrics", "actions",
                  "detector", "detector_params", "whatif_model", "revision", "created_at",
                  "updated_at"]
        read_only_fields = ["id", "revision", "created_at", "updated_at"]


class _ParentField(serializers.SlugRelatedField):
    """The parent asset by slug, looked up in the asset's own twin."""

    def to_internal_value(self, data):
        twin = self.parent.context.get("twin")
        if twin is None:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        try:
            return Asset.objects.get(twin=twin, slug=data)
        except (Asset.DoesNotExist, TypeError, ValueError):
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)


class AssetSerializer(StrictModelSerializer):
    """asset.v1."""

    twin = serializers.SlugRelatedField(slug_field="slug", queryset=Twin.objects.all())
    asset_type = serializers.SlugRelatedField(slug_field="slug", queryset=AssetType.objects.all(),
                                              allow_null=True, required=False)
    parent = _ParentField(slug_field="slug", queryset=Asset.objects.all(), allow_null=True,
                          required=False)

    class Meta:
        model = Asset
        fields = ["id", "twin", "slug", "name", "kind", "asset_type", "parent", "metadata",
                  "metrics", "desired", "revision", "created_at", "updated_at"]
        read_only_fields = ["id", "kind", "desired", "revision", "created_at", "updated_at"]

    def validate_twin(self, twin: Twin) -> Twin:
        """An asset stays in the twin it was created in (its telemetry and history are there)."""
        if self.instance is not None and twin.pk != self.instance.twin_id:
            raise serializers.ValidationError("an asset cannot move to another twin")
        return twin

    def validate_metrics(self, metrics):
        """Metric definitions as ``twins.asset_types.metric_errors`` describes them."""
        from twins.asset_types import metric_errors

        if problems := metric_errors(metrics):
            raise serializers.ValidationError(problems)
        return metrics
