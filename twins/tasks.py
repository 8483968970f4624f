"""Celery tasks of the ledger: anchoring the audit chain's tip (Celery beat, every 5 minutes)."""

from celery import shared_task

from twins.audit_chain import write_anchor


@shared_task
def anchor_audit() -> int | None:
    """Anchor the audit chain's tip; returns the anchored seq (None for an empty chain)."""
    anchor = write_anchor()
    return anchor.seq if anchor else None
