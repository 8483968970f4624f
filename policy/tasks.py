"""Celery tasks of the policy app: take ids, call ``policy.services``.

Beat schedule (settings, issue 6 block): ``expire_proposals`` (default deny for stale
approvals), ``verify_executions`` (judge complete verification windows), ``anchor_audit``
(copy the audit chain's tip to the anchor table and file).
"""

from celery import shared_task

from policy import services
from policy.audit_chain import write_anchor
from policy.errors import PolicyError
from policy.models import Proposal


@shared_task(acks_late=True)
def respond_to_anomaly(anomaly_id: int) -> int | None:
    """Simulate and propose a corrective action for a high/critical anomaly."""
    proposal = services.respond_to_anomaly(anomaly_id)
    return proposal.pk if proposal else None


@shared_task(acks_late=True)
def execute_proposal(proposal_id: int) -> str:
    """Execute an approved proposal; a refusal (lost race, interlock, stale) is an outcome."""
    try:
        return services.execute_proposal(proposal_id).status
    except PolicyError as exc:
        return f"not executed: {exc.title}: {exc}"
    except Proposal.DoesNotExist:
        return "gone"


@shared_task(acks_late=True)
def verify_proposal(proposal_id: int) -> str:
    """Judge one proposal's verification window if it is complete (scheduled with a delay:
    the proposal may have been deleted with its twin meanwhile)."""
    try:
        return services.verify_proposal(proposal_id).status
    except Proposal.DoesNotExist:
        return "gone"


@shared_task
def expire_proposals() -> int:
    """Expire pending/approved proposals past their approval window."""
    return services.expire_proposals()


@shared_task
def verify_executions() -> int:
    """Judge every verifying proposal whose window is complete."""
    return services.verify_due()


@shared_task
def anchor_audit() -> int | None:
    """Anchor the audit chain's tip; returns the anchored seq (None for an empty chain)."""
    anchor = write_anchor()
    return anchor.seq if anchor else None
