from rest_framework import serializers

from telemetry.models import Anomaly, DeadLetter
from telemetry.queries import BUCKETS, FILLS, FUNCTIONS, SOURCES


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


# --- issue 3: telemetry queries -----------------------------------------------------------------
class _CommaList(serializers.ListField):
    """A query parameter given repeated and/or comma-separated (``fn=avg,max&fn=p95``)."""

    def to_internal_value(self, data):
        return super().to_internal_value(
            [part.strip() for item in data for part in str(item).split(",")])


class SeriesParamsSerializer(serializers.Serializer):
    """Which series: a twin (slug), optionally one asset (slug) and some metrics."""

    twin = serializers.SlugField(max_length=64)
    asset = serializers.SlugField(max_length=64, required=False)
    metric = _CommaList(child=serializers.CharField(min_length=1, max_length=64), required=False,
                        help_text="metric names (no commas in them); default: all")


class RangeParamsSerializer(SeriesParamsSerializer):
    """A time range [start, end): RFC 3339 date-times with an offset."""

    start = serializers.DateTimeField()
    end = serializers.DateTimeField(
        help_text="not before start; start == end is an empty range (200, no samples)")


class QueryParamsSerializer(RangeParamsSerializer):
    """GET /telemetry/query parameters."""

    limit = serializers.IntegerField(min_value=1, default=1000,
                                     help_text="rows per page (at most TELEMETRY_QUERY_MAX_LIMIT)")
    cursor = serializers.CharField(required=False, max_length=1000,
                                   help_text="next_cursor of the previous page")


class AggregateParamsSerializer(RangeParamsSerializer):
    """GET /telemetry/aggregate parameters."""

    bucket = serializers.ChoiceField(choices=list(BUCKETS), help_text="bucket width")
    fn = _CommaList(child=serializers.ChoiceField(choices=list(FUNCTIONS)), required=False,
                    help_text="functions; default avg")
    fill = serializers.ChoiceField(choices=list(FILLS), default="none",
                                   help_text="empty buckets: omit, null (count 0), or previous")
    source = serializers.ChoiceField(choices=list(SOURCES), default="auto", help_text=(
        "rollup needs a bucket of whole minutes and no percentiles (else 400)"))


class LatestParamsSerializer(serializers.Serializer):
    """GET /telemetry/latest parameters."""

    twin = serializers.SlugField(max_length=64)
    asset = serializers.SlugField(max_length=64)


class SampleSerializer(serializers.Serializer):
    asset = serializers.CharField()
    metric = serializers.CharField()
    ts = serializers.DateTimeField()
    value = serializers.FloatField()


class SamplePageSerializer(serializers.Serializer):
    """One page of raw samples ordered by (asset, metric, ts); null next_cursor on the last."""

    results = SampleSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class AggregateSeriesSerializer(serializers.Serializer):
    """One (asset, metric) series: bucket starts and, per function, the matching values."""

    asset = serializers.CharField()
    metric = serializers.CharField()
    unit = serializers.CharField()
    ts = serializers.ListField(child=serializers.DateTimeField())
    values = serializers.DictField(child=serializers.ListField(
        child=serializers.FloatField(allow_null=True)))


class AggregateResultSerializer(serializers.Serializer):
    """Bucketed aggregates; ``start``/``end`` are the bucket-aligned range actually covered."""

    twin = serializers.CharField()
    source = serializers.ChoiceField(choices=["raw", "rollup_1m", "rollup_1h"])
    bucket = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    functions = serializers.ListField(child=serializers.CharField())
    series = AggregateSeriesSerializer(many=True)


class LatestValueSerializer(serializers.Serializer):
    metric = serializers.CharField()
    unit = serializers.CharField()
    ts = serializers.DateTimeField(allow_null=True)
    value = serializers.FloatField(allow_null=True)


class LatestSerializer(serializers.Serializer):
    """The latest value of every metric of one asset (null where never reported)."""

    twin = serializers.CharField()
    asset = serializers.CharField()
    metrics = LatestValueSerializer(many=True)


class DetectionFailureSerializer(serializers.Serializer):
    """One asset whose detection failed: how often, and the latest error."""

    twin = serializers.CharField()
    asset = serializers.CharField()
    failures = serializers.IntegerField()
    last_error = serializers.CharField()
    last_error_at = serializers.DateTimeField(allow_null=True)
    scored_until = serializers.DateTimeField(allow_null=True)


class DetectionHealthSerializer(serializers.Serializer):
    """Detection failures of the visible assets (``telemetry.detection.detection_failures``)."""

    failures = serializers.IntegerField()
    assets = DetectionFailureSerializer(many=True)


class IngestStatusSerializer(serializers.Serializer):
    """Ingest processes (one status file each) and their merged lags in seconds."""

    processes = serializers.ListField(child=serializers.DictField())
    buffered = serializers.IntegerField()
    event_lag_p50_s = serializers.FloatField(allow_null=True)
    event_lag_p99_s = serializers.FloatField(allow_null=True)
    commit_lag_p99_s = serializers.FloatField(allow_null=True)
    detection = DetectionHealthSerializer()
