from rest_framework import serializers

from twins.models import Asset, Twin


class TwinSerializer(serializers.ModelSerializer):
    """twin.v1."""

    class Meta:
        model = Twin
        fields = ["id", "slug", "name", "description", "created_at"]


class AssetSerializer(serializers.ModelSerializer):
    """asset.v1."""

    twin = serializers.CharField(source="twin.slug", read_only=True)

    class Meta:
        model = Asset
        fields = ["id", "twin", "slug", "name", "kind", "metadata", "metrics", "created_at"]
