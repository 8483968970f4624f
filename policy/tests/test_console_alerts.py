"""Alerts (issue 15): an unacknowledged critical anomaly reaches its twin's supervisors by
e-mail (Django's locmem backend in tests), and the notification is in the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from telemetry.models import Anomaly
from telemetry.tasks import escalate_anomalies
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_an_escalated_critical_anomaly_is_emailed_to_supervisors_and_audited(
        users, pump, settings):
    """GIVEN a critical anomaly open past the escalation delay, and a supervisor and a viewer
    with e-mail addresses; WHEN the escalation job runs; THEN the supervisor (not the viewer)
    gets one e-mail linking to the anomaly list, and an alert.escalation audit entry names
    them."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PUBLIC_URL = "https://ops.example"
    for role in ("supervisor", "viewer"):
        users[role].email = f"{role}@example.com"
        users[role].save()
    now = timezone.now()
    anomaly = Anomaly.objects.create(
        asset=pump, metric="Pressure", detector="ewma", kind="spike", severity="critical",
        score=0.99, started_at=now, last_seen_at=now)
    Anomaly.objects.filter(pk=anomaly.pk).update(created_at=now - timedelta(hours=1))

    assert escalate_anomalies() == [anomaly.pk]

    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["supervisor@example.com"]
    assert "Critical anomaly unacknowledged on Pump 1" in sent.subject
    assert ("https://ops.example/anomalies/?status=open&severity=critical&twin=plant"
            "&asset=pump-1") in sent.body
    entry = AuditEntry.objects.get(action="alert.escalation")
    assert entry.resource_id == str(anomaly.pk) and "supervisor@example.com" in entry.reason
