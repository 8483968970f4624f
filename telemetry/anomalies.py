"""The anomaly lifecycle beyond detection: acknowledgement and escalation.

open → acknowledged (a supervisor, with a comment) → cleared (by detection once the signal is
normal). An open critical anomaly nobody acknowledged within ``ANOMALY_ESCALATE_AFTER_SECONDS``
of being raised is escalated once (audited and published as ``anomaly.escalate``).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from telemetry.choices import AnomalyStatus, Severity
from telemetry.detection import serialize
from telemetry.models import Anomaly
from twins.errors import ServiceError
from twins.scoping import refusal

ACKNOWLEDGE_PERMISSION = "telemetry.acknowledge_anomaly"


class AnomalyError(ServiceError):
    """Base of lifecycle errors; ``status`` is the HTTP status to answer with."""

    status, title = 400, "Anomaly error"


class NotAllowed(AnomalyError):
    status = 403


class WrongState(AnomalyError):
    status = 409


def _publish(anomaly: Anomaly, action: str, *, actor, reason: str = "", request=None) -> None:
    from twins.ledger import record_change

    record_change(actor=actor, action=action, resource_type="anomaly", resource_id=anomaly.pk,
                  operation="updated", twin=anomaly.asset.twin, after=serialize(anomaly),
                  reason=reason, request=request)


def acknowledge_anomaly(anomaly_id: int, *, actor, comment: str, request=None) -> Anomaly:
    """Acknowledge an open anomaly with a comment; who and when are recorded.

    Acknowledging silences the anomaly's escalation, so it is a supervisor's duty on the
    anomaly's own twin: ``twins.scoping.may(actor, "telemetry.acknowledge_anomaly", twin)``
    (the role permission of supervisors and admins, and operate rights on the twin). Raises
    ValueError for a blank comment, ``Anomaly.DoesNotExist``, NotAllowed, or WrongState if the
    anomaly is not open (a conditional UPDATE closes the double-click race).
    """
    if not comment or not comment.strip():
        raise ValueError("a comment is required to acknowledge an anomaly")
    twin = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id).asset.twin
    reason = refusal(actor, ACKNOWLEDGE_PERMISSION, twin)
    if reason:
        raise NotAllowed(reason)
    with transaction.atomic():
        updated = Anomaly.objects.filter(pk=anomaly_id, status=AnomalyStatus.OPEN).update(
            status=AnomalyStatus.ACKNOWLEDGED, acknowledged_by=actor,
            acknowledged_at=timezone.now(), ack_comment=comment.strip(),
        )
        if updated != 1:
            raise WrongState(f"anomaly {anomaly_id} is not open")
        anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
        _publish(anomaly, "anomaly.acknowledge", actor=actor, reason=comment.strip(),
                 request=request)
    return anomaly


def escalate_unacknowledged(now=None) -> list[int]:
    """Escalate open critical anomalies raised more than the configured time ago; return ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.ANOMALY_ESCALATE_AFTER_SECONDS)
    escalated = []
    candidates = Anomaly.objects.filter(status=AnomalyStatus.OPEN, severity=Severity.CRITICAL,
                                        escalated_at__isnull=True, created_at__lte=cutoff)
    for anomaly_id in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            if Anomaly.objects.filter(pk=anomaly_id, escalated_at__isnull=True).update(
                escalated_at=now
            ) != 1:
                continue  # another worker got there first
            anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
            _publish(anomaly, "anomaly.escalate", actor="escalation",
                     reason=f"critical and unacknowledged for "
                            f"{settings.ANOMALY_ESCALATE_AFTER_SECONDS} s")
        escalated.append(anomaly_id)
    return escalated
