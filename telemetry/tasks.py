"""Celery tasks of the telemetry app: thin wrappers that take ids and call services."""

from celery import shared_task

from telemetry import detection


@shared_task(acks_late=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def detect_anomalies(asset_id: int) -> list[int]:
    """Run detection for one asset (see ``telemetry.detection.detect_anomalies``)."""
    return detection.detect_anomalies(asset_id)


@shared_task
def escalate_anomalies() -> list[int]:
    """Beat job: escalate unacknowledged critical anomalies (``telemetry.anomalies``)."""
    from telemetry.anomalies import escalate_unacknowledged

    return escalate_unacknowledged()


from telemetry.rollup_tasks import refresh_rollups  # noqa: E402,F401  (register the task)
