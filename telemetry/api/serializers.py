from rest_framework import serializers

from telemetry.models import Anomaly, DeadLetter


class AnomalySerializer(serializers.ModelSerializer):
    """anomaly.v1: one anomaly episode with its evidence."""

    twin = serializers.CharField(source="asset.twin.slug", read_only=True)
    asset = serializers.CharField(source="asset.slug", read_only=True)

    class Meta:
        model = Anomaly
        fields = [
            "id", "twin", "asset", "metric", "detector", "kind", "severity", "score", "status",
            "started_at", "last_seen_at", "ended_at", "n_points", "features",
        ]


class IngestResultSerializer(serializers.Serializer):
    """The answer to POST /telemetry/ingest."""

    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    samples = serializers.IntegerField()
    rejected = serializers.ListField(child=serializers.DictField())


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = ["id", "received_at", "source", "topic", "reason", "payload"]
