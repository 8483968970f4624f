"""Celery tasks of the telemetry app: thin wrappers that take ids and call services."""

from celery import shared_task

from telemetry import detection, handoff


@shared_task(acks_late=True)
def detect_anomalies(asset_id: int) -> list[int]:
    """Run detection for one asset, isolated (``telemetry.detection.detect_isolated``).

    A failure is logged, counted on the asset and returns []; no retry is needed because the
    asset's watermark moves only when a run commits, so its next batch re-scores the rows.
    """
    return detection.detect_isolated(asset_id)


@shared_task(acks_late=True)
def detect_anomalies_of(asset_ids: list[int]) -> list[int]:
    """``detect_anomalies`` for each of ``asset_ids`` in turn, each isolated.

    What ingest enqueues: one task per committed batch (or coalesced round of batches), not
    one per asset, so the enqueue costs one broker round trip whatever the batch touched.
    Returns the anomaly ids that need a response, in asset order.
    """
    return [found for asset_id in asset_ids for found in detection.detect_isolated(asset_id)]


@shared_task
def escalate_anomalies() -> list[int]:
    """Beat job: escalate unacknowledged critical anomalies (``telemetry.anomalies``)."""
    from telemetry.anomalies import escalate_unacknowledged

    escalated = escalate_unacknowledged()
    if escalated:  # the documented hand-off up: policy.alerts e-mails the twin's supervisors
        handoff.send(handoff.ESCALATE, escalated)
    return escalated


from telemetry.rollup_tasks import refresh_rollups  # noqa: E402,F401  (register the task)
