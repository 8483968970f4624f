"""Thin Celery tasks for AIW housekeeping (scheduled hourly by Celery beat)."""

from __future__ import annotations

from celery import shared_task

from aiw import services


@shared_task
def prune_feed() -> int:
    """Delete change events older than AIW_FEED_RETENTION_DAYS; returns how many."""
    return services.prune_feed()


@shared_task
def purge_idempotency_keys() -> int:
    """Delete expired idempotency records; returns how many."""
    return services.purge_idempotency_keys()
