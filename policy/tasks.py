"""Celery tasks of the policy app: take ids, call ``policy.services``.

Beat schedule (settings, issue 6 block): ``expire_proposals`` (default deny for stale
approvals), ``verify_executions`` (judge complete verification windows),
``recover_commands`` (commands left in flight by a process that died). The audit chain's
anchoring task is ``twins.tasks.anchor_audit``.

Every task is safe to run again (``acks_late``: a worker killed mid-task gets its message
redelivered): the command tasks send nothing unless the command is still in flight without
a live lease, and then re-send it under its stable command id.
"""

from celery import shared_task
from django.conf import settings

from policy import alerts, notifications, services
from policy.choices import ProposalStatus
from policy.errors import PolicyError, ProposalConflict
from policy.models import Proposal


@shared_task(acks_late=True)
def respond_to_anomaly(anomaly_id: int) -> int | None:
    """Simulate and propose a corrective action for a high/critical anomaly."""
    proposal = services.respond_to_anomaly(anomaly_id)
    return proposal.pk if proposal else None


@shared_task(acks_late=True)
def execute_proposal(proposal_id: int) -> str:
    """Claim and execute an approved proposal (the automatic path); a refusal (lost race,
    interlock, stale) is an outcome. Redelivered after its worker died past the claim, it
    finds the proposal executing and completes it instead (a no-op while a lease is live)."""
    try:
        return services.execute_proposal(proposal_id).status
    except ProposalConflict as exc:
        proposal = services.complete_execution(proposal_id)
        if proposal.status == ProposalStatus.EXECUTING:
            return f"not executed: {exc.title}: {exc}"
        return proposal.status
    except PolicyError as exc:
        return f"not executed: {exc.title}: {exc}"
    except Proposal.DoesNotExist:
        return "gone"


@shared_task(acks_late=True)
def complete_execution(proposal_id: int) -> str:
    """Send a claimed execution's command and record the outcome (enqueued by a request)."""
    try:
        return services.complete_execution(proposal_id).status
    except Proposal.DoesNotExist:
        return "gone"


@shared_task(acks_late=True)
def complete_rollback(proposal_id: int) -> str:
    """Send a claimed rollback's command and record the outcome (enqueued by a request)."""
    try:
        return services.complete_rollback(proposal_id).status
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
def recover_commands() -> int:
    """Re-send or give up commands left in flight past their lease; how many settled."""
    return services.recover_commands()


@shared_task(acks_late=True)
def notify_proposal(kind: str, proposal_id: int, revision: int) -> int | None:
    """Tell the subscribers about a proposal's new state (queued on the commit of it)."""
    return alerts.notify_proposal(kind, proposal_id, revision)


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_notification(self, delivery_id: int):
    """Send one notification delivery; returns its status. A failure is retried after
    ``notifications.backoff`` seconds (30, 60, 120, ... by default) up to
    ``NOTIFY_MAX_RETRIES`` times; then the delivery is recorded as failed and audited
    (``notifications.give_up``). A refused webhook target (``permanent``) is not retried."""
    try:
        return notifications.deliver(delivery_id)
    except notifications.DeliveryFailed as exc:
        if exc.permanent or self.request.retries >= settings.NOTIFY_MAX_RETRIES:
            return notifications.give_up(delivery_id, str(exc)).status
        # A worker needs the Retry raised to re-queue the task with its countdown; eager Celery
        # (the embedded default, tests) runs the retry inline when the task hands it back.
        return self.retry(countdown=notifications.backoff(self.request.retries), exc=exc,
                          throw=not self.request.is_eager)


@shared_task
def requeue_unsent_notifications() -> int:
    """Beat job: queue deliveries whose queueing failed (``notifications.requeue_unsent``)."""
    return notifications.requeue_unsent(settings.NOTIFY_REQUEUE_AFTER_SECONDS)


from policy.alerts import notify_escalations  # noqa: E402,F401  (register the task)
