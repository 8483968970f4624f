"""Celery tasks of the bottom layer: anchoring the audit chain's tip (Celery beat, every 5
minutes) and publishing coalesced asset state on the feed (Celery beat, every second)."""

from celery import shared_task

from twins.audit_chain import write_anchor
from twins.state import publish_states


@shared_task
def anchor_audit() -> int | None:
    """Anchor the audit chain's tip; returns the anchored seq (None for an empty chain)."""
    anchor = write_anchor()
    return anchor.seq if anchor else None


@shared_task(ignore_result=True)
def publish_asset_states() -> int:
    """Put due ``asset.state`` events on the feed (``twins.state.publish_states``)."""
    return publish_states()
