from rest_framework import serializers

from aiw.feed import encode_cursor
from aiw.models import ChangeEvent


class ChangeEventSerializer(serializers.ModelSerializer):
    """change-event.v1: one entry of the feed. ``cursor`` resumes right after this event."""

    cursor = serializers.SerializerMethodField()
    twin = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = ChangeEvent
        fields = ["cursor", "id", "type", "resource_type", "resource_id", "operation", "twin",
                  "actor", "at", "data"]

    def get_cursor(self, event: ChangeEvent) -> str:
        return encode_cursor(event.id)
