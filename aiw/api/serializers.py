"""AIW response shapes: change-event.v1 plus the documents of the manifest, /schemas, /diff,
/snapshot and problem+json (used for OpenAPI and, for change events, for the payload)."""

from __future__ import annotations

from rest_framework import serializers

from aiw.feed import encode_cursor, iso_utc
from twins.models import ChangeEvent


class ChangeEventSerializer(serializers.ModelSerializer):
    """change-event.v1: one entry of the feed. ``cursor`` resumes right after this event.

    Documents the shape for OpenAPI and serializes model instances; /diff and the streams
    send ``aiw.feed.FeedItem.json``, which a test holds equal to this serializer's output.
    """

    cursor = serializers.CharField(read_only=True)
    twin = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    at = serializers.DateTimeField(source="created_at")
    data = serializers.JSONField(help_text="The resource's new state ({resource_type}.v1).")

    class Meta:
        model = ChangeEvent
        fields = ["cursor", "id", "type", "resource_type", "resource_id", "operation", "twin",
                  "actor", "at", "data"]

    def to_representation(self, event: ChangeEvent) -> dict:
        return {
            "cursor": encode_cursor(event.id), "id": event.id, "type": event.type,
            "resource_type": event.resource_type, "resource_id": event.resource_id,
            "operation": event.operation, "twin": event.twin.slug if event.twin else None,
            "actor": event.actor, "at": iso_utc(event.created_at), "data": event.data,
        }


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details (application/problem+json)."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField(required=False)
    errors = serializers.JSONField(required=False, help_text="Invalid fields (400).")
    resync = serializers.URLField(required=False, help_text="Where to resynchronise (410).")


class DiffPageSerializer(serializers.Serializer):
    """A /diff page: events in feed order and the cursor to continue from."""

    events = ChangeEventSerializer(many=True)
    next_cursor = serializers.CharField(
        help_text="Pass as `since` next time; advances past filtered-out events too.")
    has_more = serializers.BooleanField(help_text="True when another page is ready now.")


class SchemaEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.URLField()


class SchemaIndexSerializer(serializers.Serializer):
    """GET /schemas."""

    schemas = SchemaEntrySerializer(many=True)


class CallerSerializer(serializers.Serializer):
    """Who the manifest is describing: the caller and what it may do."""

    authenticated = serializers.BooleanField()
    username = serializers.CharField(allow_null=True)
    role = serializers.CharField(allow_null=True)
    auth = serializers.CharField(allow_null=True, help_text="token, session, basic or null")
    token = serializers.DictField(allow_null=True)
    permissions = serializers.ListField(child=serializers.CharField())
    twins = serializers.DictField(help_text="view/operate: slugs, or ['*'] for every twin")


class ManifestSerializer(serializers.Serializer):
    """GET /.well-known/aiw-manifest.json."""

    service = serializers.CharField()
    version = serializers.CharField()
    aiw_version = serializers.CharField()
    endpoints = serializers.DictField(child=serializers.CharField())
    operations = serializers.ListField(child=serializers.DictField(),
                                       help_text="Every HTTP operation (see the OpenAPI document).")
    schemas = serializers.DictField(child=serializers.URLField())
    resources = serializers.DictField(
        child=serializers.CharField(),
        help_text="Resource type on the feed -> the schema of its events' data.")
    actions = serializers.DictField(help_text="action-catalogue.v1: what the caller may "
                                              "propose, with url, schema and propose links.")
    twin_model = serializers.DictField(help_text="Twin, asset type and asset resources, "
                                                 "If-Match concurrency, asset state.")
    auth = serializers.ListField(child=serializers.DictField())
    limits = serializers.DictField()
    cursor = serializers.DictField()
    streams = serializers.DictField()
    idempotency = serializers.DictField()
    errors = serializers.DictField()
    caller = CallerSerializer()


class SnapshotSerializer(serializers.Serializer):
    """GET /snapshot: current state read in one REPEATABLE READ transaction with its cursor."""

    cursor = serializers.CharField(help_text="Follow /diff or /subscribe from here.")
    twins = serializers.ListField(child=serializers.DictField(), help_text="twin.v1")
    assets = serializers.ListField(child=serializers.DictField(), help_text="asset.v1")
    asset_states = serializers.ListField(child=serializers.DictField(),
                                         help_text="asset-state.v1 of each asset")
    open_anomalies = serializers.ListField(child=serializers.DictField(),
                                           help_text="anomaly.v1")
    proposals = serializers.ListField(child=serializers.DictField(), help_text="proposal.v1")
