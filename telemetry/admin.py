from django.contrib import admin, messages

from telemetry import detector_configs
from telemetry.calibration import calibrate
from telemetry.models import Anomaly, AssetCalibration, DeadLetter, DetectorConfig


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin):
    list_display = ["id", "asset", "metric", "detector", "kind", "severity", "score", "status",
                    "started_at", "n_points", "acknowledged_by", "escalated_at"]
    list_filter = ["severity", "kind", "status", "detector"]
    readonly_fields = [f.name for f in Anomaly._meta.fields]  # changes go through services

    def has_add_permission(self, request) -> bool:
        return False  # anomalies are opened by detection, never typed in

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # closed by the lifecycle services (acknowledge, resolve), never deleted




@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["id", "received_at", "source", "topic", "reason"]
    list_filter = ["source"]
    search_fields = ["reason", "topic"]

    def has_add_permission(self, request) -> bool:
        return False  # dead letters are written by ingest, never typed in


@admin.register(DetectorConfig)
class DetectorConfigAdmin(admin.ModelAdmin):
    """Which detector watches each asset kind; a change re-fits calibrations on next use.
    Saves and deletes go through ``telemetry.detector_configs`` (audited, on the feed)."""

    list_display = ["asset_kind", "detector", "params", "calibration_rows", "updated_at"]

    def save_model(self, request, obj: DetectorConfig, form, change: bool) -> None:
        detector_configs.save_config(obj, actor=request.user, request=request)

    def delete_model(self, request, obj: DetectorConfig) -> None:
        detector_configs.delete_config(obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for config in queryset:
            detector_configs.delete_config(config, actor=request.user, request=request)


@admin.register(AssetCalibration)
class AssetCalibrationAdmin(admin.ModelAdmin):
    list_display = ["asset", "detector", "params", "n_rows", "start", "end", "fitted_at"]
    readonly_fields = ["asset", "detector", "params", "state", "n_rows", "start", "end"]
    actions = ["refit"]

    @admin.action(description="Re-fit on the asset's first calibration rows")
    def refit(self, request, queryset):
        for calibration in queryset.select_related("asset__twin"):
            try:
                calibrate(calibration.asset, actor=request.user)
            except ValueError as exc:
                self.message_user(request, f"{calibration.asset}: {exc}", messages.ERROR)
        self.message_user(request, f"Re-fitted {queryset.count()} calibration(s).")
