"""Helpers shared by the policy services: serialise, transition, permission checks, audit."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import F

from policy.errors import NotPermitted, ProposalConflict
from policy.models import Proposal
from twins.ledger import record_change
from twins.scoping import refusal

ASSET_LOCK_NAMESPACE = 0x0475_7432  # advisory locks per asset: one proposal in flight


def serialize(proposal: Proposal) -> dict:
    """proposal.v1 of ``proposal``."""
    from policy.api.serializers import ProposalSerializer

    return dict(ProposalSerializer(proposal).data)


def load(proposal_id: int, *, lock: bool = False) -> Proposal:
    """The proposal with its twin and asset (``lock``: SELECT ... FOR NO KEY UPDATE of its row:
    serialises writers of this proposal without blocking foreign-key checks of other rows).

    Raises ``Proposal.DoesNotExist``.
    """
    rows = Proposal.objects.select_related("twin", "asset", "simulation", "proposed_by")
    if lock:
        rows = rows.select_for_update(of=("self",), no_key=True)
    return rows.get(pk=proposal_id)


def transition(proposal_id: int, expected: list[str], **changes) -> Proposal:
    """Conditional UPDATE from one of ``expected`` statuses; raises ProposalConflict if lost.

    The race it closes: two callers acting on one proposal both read "approved"; only the
    UPDATE ... WHERE status IN (expected) that changes a row wins, the other sees 0 rows.
    Bumps ``revision``.
    """
    updated = Proposal.objects.filter(pk=proposal_id, status__in=expected).update(
        revision=F("revision") + 1, **changes)
    if updated != 1:
        current = Proposal.objects.filter(pk=proposal_id).values_list("status", flat=True).first()
        raise ProposalConflict(f"proposal {proposal_id} is {current}, expected "
                               f"{'/'.join(expected)}")
    return load(proposal_id)


def update(proposal_id: int, **changes) -> Proposal:
    """Unconditional field update (inside a transaction that already holds the row lock)."""
    Proposal.objects.filter(pk=proposal_id).update(revision=F("revision") + 1, **changes)
    return load(proposal_id)


def require(actor, perm: str, twin) -> None:
    """Raise NotPermitted unless ``actor`` has ``perm`` and may operate ``twin``
    (``twins.scoping.may``, the one rule the dashboard and the API ask too)."""
    reason = refusal(actor, perm, twin)
    if reason:
        raise NotPermitted(reason)


def audit(proposal: Proposal, *, actor, action: str, before: dict | None = None,
          reason: str = "", request=None, operation: str = "updated"):
    """Record one change of ``proposal`` (audit entry + change event) in this transaction."""
    return record_change(actor=actor, action=action, resource_type="proposal",
                         resource_id=proposal.pk, operation=operation, twin=proposal.twin,
                         before=before, after=serialize(proposal), reason=reason,
                         request=request)


def lock_asset(asset_id: int) -> None:
    """Transaction-scoped advisory lock on one asset (serialises anomaly responses)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)",
                       [ASSET_LOCK_NAMESPACE, asset_id % 2**31])


def notify_on_commit(proposal: Proposal) -> None:
    """If ``proposal`` just entered a status people are told about (``policy.alerts.
    STATUS_KIND``: waiting for approval, failed, rolled back), queue the notification once
    this transaction commits (never blocking it: a broker failure is logged, not raised)."""
    from policy.alerts import STATUS_KIND

    kind = STATUS_KIND.get(proposal.status)
    if kind is None:
        return
    proposal_id, revision = proposal.pk, proposal.revision
    transaction.on_commit(lambda: _enqueue_notification(kind, proposal_id, revision),
                          robust=True)


def _enqueue_notification(kind: str, proposal_id: int, revision: int) -> None:
    from policy.tasks import notify_proposal

    notify_proposal.delay(str(kind), proposal_id, revision)
