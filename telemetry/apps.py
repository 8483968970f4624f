from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry and anomalies"

    def ready(self) -> None:
        from telemetry.calibration import asset_type_errors
        from twins.asset_types import register_validator

        register_validator(asset_type_errors)
