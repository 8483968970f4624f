from django.contrib import admin

from telemetry.models import Anomaly, DeadLetter


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin):
    list_display = ["id", "asset", "metric", "detector", "kind", "severity", "score", "status",
                    "started_at", "n_points"]
    list_filter = ["severity", "kind", "status", "detector"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["id", "received_at", "source", "topic", "reason"]
    list_filter = ["source"]
    search_fields = ["reason", "topic"]
