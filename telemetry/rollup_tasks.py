"""Celery task that keeps the plain-PostgreSQL rollups current (scheduled by Celery beat)."""

from celery import shared_task

from telemetry import rollups


@shared_task(acks_late=True, ignore_result=True)
def refresh_rollups() -> dict:
    """Fold dirty ranges into the 1-minute and 1-hour rollups (``telemetry.rollups``).

    Returns the counts as JSON: ranges claimed, minute and hour rows rewritten, skip reason.
    """
    report = rollups.refresh_rollups()
    return {"ranges": report.ranges, "minute_rows": report.minute_rows,
            "hour_rows": report.hour_rows, "skipped": report.skipped}
