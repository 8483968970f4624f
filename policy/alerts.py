"""Alerts that reach people when nobody looks: an escalated critical anomaly is e-mailed.

``telemetry.tasks.escalate_anomalies`` (Celery beat) escalates open critical anomalies nobody
acknowledged in ``ANOMALY_ESCALATE_AFTER_SECONDS`` and hands their ids, by task name, to
``notify_escalations`` here (telemetry sits below policy). Each one is e-mailed through Django's
mail framework (``EMAIL_BACKEND``) to every active user with an e-mail address who may
acknowledge it (``twins.scoping.may`` with ``telemetry.acknowledge_anomaly`` on its twin), with a
link to the anomaly list where they act; the notification is itself an audit entry
(``alert.escalation``, the recipients and link in its reason), so the audit log shows who was
told and when.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from telemetry.anomalies import ACKNOWLEDGE_PERMISSION
from telemetry.detection import serialize
from telemetry.models import Anomaly
from twins.ledger import record_change
from twins.scoping import may


def recipients(twin) -> list[str]:
    """E-mail addresses of active users who may acknowledge anomalies on ``twin``."""
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    return sorted(u.email for u in users if may(u, ACKNOWLEDGE_PERMISSION, twin))


def _message(anomaly: Anomaly, link: str) -> tuple[str, str]:
    asset = anomaly.asset
    subject = f"[OpsTwin] Critical anomaly unacknowledged on {asset.name} ({asset.twin.slug})"
    body = (f"{anomaly.kind} on {anomaly.metric} of {asset.name} ({asset}), score "
            f"{anomaly.score:.2f}, open since {anomaly.started_at:%Y-%m-%d %H:%M:%S %Z} "
            f"(sensor time) and not acknowledged for {settings.ANOMALY_ESCALATE_AFTER_SECONDS} "
            f"s.\n\nAcknowledge it or act: {link}\n")
    return subject, body


def notify_escalation(anomaly_id: int) -> list[str]:
    """E-mail one escalated anomaly to its twin's supervisors and audit it; returns the
    addresses (none: nothing sent, still audited so the gap is visible)."""
    anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
    twin = anomaly.asset.twin
    link = (f"{settings.PUBLIC_URL}{reverse('anomaly-list')}?status=open&severity=critical"
            f"&twin={twin.slug}")
    to = recipients(twin)
    if to:
        send_mail(*_message(anomaly, link), from_email=None, recipient_list=to)
    with transaction.atomic():
        record_change(actor="alerts", action="alert.escalation", resource_type="anomaly",
                      resource_id=anomaly.pk, operation="updated", twin=twin,
                      after=serialize(anomaly),
                      reason=f"critical anomaly unacknowledged: e-mailed "
                             f"{', '.join(to) or 'nobody (no address on file)'}; {link}")
    return to


@shared_task(name="policy.alerts.notify_escalations")
def notify_escalations(anomaly_ids: list[int]) -> dict[int, list[str]]:
    """Celery task: ``notify_escalation`` for each id (the escalation job's hand-off)."""
    return {anomaly_id: notify_escalation(anomaly_id) for anomaly_id in anomaly_ids}
