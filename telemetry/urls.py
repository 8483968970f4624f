from django.urls import path

from telemetry.api.query_views import AggregateView, IngestStatusView, LatestView, QueryView
from telemetry.api.views import IngestView
from telemetry.views import acknowledge

urlpatterns = [
    path("ingest", IngestView.as_view(), name="telemetry-ingest"),
    path("ingest/status", IngestStatusView.as_view(), name="telemetry-ingest-status"),
    path("query", QueryView.as_view(), name="telemetry-query"),
    path("aggregate", AggregateView.as_view(), name="telemetry-aggregate"),
    path("latest", LatestView.as_view(), name="telemetry-latest"),
    path("anomalies/<int:pk>/acknowledge", acknowledge, name="anomaly-acknowledge"),
]
