from django.urls import path

from telemetry.api.views import IngestView

urlpatterns = [path("ingest", IngestView.as_view(), name="telemetry-ingest")]
