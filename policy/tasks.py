"""Celery tasks of the policy app: take ids, call ``policy.services``."""

from celery import shared_task

from policy import services
from policy.errors import ProposalConflict


@shared_task(acks_late=True)
def respond_to_anomaly(anomaly_id: int) -> int | None:
    """Simulate and propose a corrective action for a high/critical anomaly."""
    proposal = services.respond_to_anomaly(anomaly_id)
    return proposal.pk if proposal else None


@shared_task(acks_late=True)
def execute_proposal(proposal_id: int) -> str:
    """Execute an approved proposal; a lost race (already executing/executed) is not an error."""
    try:
        return services.execute_proposal(proposal_id).status
    except ProposalConflict as exc:
        return f"skipped: {exc}"
