"""Alerts that reach people when nobody looks: what each notification says, and its tasks.

- ``anomaly_escalated``: ``telemetry.tasks.escalate_anomalies`` (Celery beat) escalates open
  critical anomalies nobody acknowledged in ``ANOMALY_ESCALATE_AFTER_SECONDS`` and hands their
  ids, by task name, to ``notify_escalations`` here (telemetry sits below policy). The link
  goes to the anomaly list, filtered to the open critical anomalies of the anomaly's asset,
  where people acknowledge (each row links on to the asset page and any proposal).
- ``approval_needed``, ``execution_failed``, ``rolled_back``: ``policy.services`` schedule
  ``policy.tasks.notify_proposal`` on the commit that moved the proposal there; the link goes
  to the proposal's page, where people approve, reject, re-simulate or roll back.

Each is sent by ``policy.notifications.notify`` (subscriptions, permissions, e-mail and
webhook deliveries) and is itself an audit entry (``alert.escalation``, ``alert.
approval_needed``, ...) naming the recipients and the link, so the audit log shows who was
told and when; with nobody to tell it is still audited, so the gap is visible.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from celery import shared_task
from django.conf import settings
from django.urls import reverse

from policy.choices import NotificationKind, ProposalStatus
from policy.models import Proposal
from policy.notifications import Message, absolute, notify
from telemetry.detection import serialize as serialize_anomaly
from telemetry.models import Anomaly
from twins.models import AuditEntry

#: The notification a proposal entering each status sends.
STATUS_KIND = {
    ProposalStatus.PENDING_APPROVAL: NotificationKind.APPROVAL_NEEDED,
    ProposalStatus.FAILED: NotificationKind.EXECUTION_FAILED,
    ProposalStatus.ROLLED_BACK: NotificationKind.ROLLED_BACK,
}


def escalation_message(anomaly: Anomaly) -> Message:
    """The ``anomaly_escalated`` message of one critical anomaly nobody acknowledged."""
    asset, twin = anomaly.asset, anomaly.asset.twin
    query = urlencode({"status": "open", "severity": "critical", "twin": twin.slug,
                       "asset": asset.slug})
    link = absolute(f"{reverse('anomaly-list')}?{query}")
    text = (f"{anomaly.kind} on {anomaly.metric} of {asset.name} ({asset}), score "
            f"{anomaly.score:.2f}, open since {anomaly.started_at:%Y-%m-%d %H:%M:%S %Z} "
            f"(sensor time) and not acknowledged for {settings.ANOMALY_ESCALATE_AFTER_SECONDS} "
            f"s.\n\nAcknowledge it or act: {link}\n")
    return Message(
        kind=NotificationKind.ANOMALY_ESCALATED, twin=twin, resource_type="anomaly",
        resource_id=str(anomaly.pk), key=f"anomaly_escalated:anomaly:{anomaly.pk}",
        subject=f"[OpsTwin] Critical anomaly unacknowledged on {asset.name} ({twin.slug})",
        text=text, link=link, data=serialize_anomaly(anomaly))


def notify_escalation(anomaly_id: int) -> list[str]:
    """Notify one escalated anomaly; returns the targets told (e-mail addresses, webhook
    URLs; none: nothing sent, still audited so the gap is visible)."""
    anomaly = Anomaly.objects.select_related("asset__twin").get(pk=anomaly_id)
    notification = notify(escalation_message(anomaly))
    return list(notification.deliveries.order_by("pk").values_list("target", flat=True))


@shared_task(name="policy.alerts.notify_escalations")
def notify_escalations(anomaly_ids: list[int]) -> dict[int, list[str]]:
    """Celery task: ``notify_escalation`` for each id (the escalation job's hand-off)."""
    return {anomaly_id: notify_escalation(anomaly_id) for anomaly_id in anomaly_ids}


def _what(proposal: Proposal) -> str:
    parameters = json.dumps(proposal.parameters, sort_keys=True) if proposal.parameters else ""
    return (f"{proposal.action} {parameters} on {proposal.asset.name} ({proposal.asset})"
            .replace("  ", " "))


def _outcome(state: dict | None) -> str:
    state = state or {}
    effect, delivery = state.get("effect") or {}, state.get("delivery") or {}
    return (f"delivery: {delivery.get('detail') or 'unknown'}; effect: "
            f"{effect.get('detail') or effect.get('status') or 'unknown'}")


def _breach(proposal: Proposal) -> str:
    """`` (3 of 4 readings of <metric> outside 120..130)`` for a breached verification, else
    ""."""
    verification = proposal.verification or {}
    if verification.get("outcome") != "breach":
        return ""
    low, high = (verification.get("band") or [None, None])[:2]
    return (f" ({verification.get('outside')} of {verification.get('n')} readings of "
            f"{verification.get('metric')} outside the simulated band {low}..{high})")


def _rollback_blocked_reason(proposal: Proposal) -> str:
    entry = (AuditEntry.objects.filter(resource_type="proposal", resource_id=str(proposal.pk),
                                       action="alert.rollback_blocked")
             .order_by("-seq").values_list("reason", flat=True).first())
    return (entry or "the rollback could not run").removeprefix("breach, and ")


def _proposal_text(proposal: Proposal, kind: str, link: str) -> tuple[str, str]:
    what, risk = _what(proposal), proposal.get_risk_level_display()
    if kind == NotificationKind.APPROVAL_NEEDED:
        expires = (f" It expires at {proposal.expires_at:%Y-%m-%d %H:%M:%S %Z} (wall clock)."
                   if proposal.expires_at else "")
        return (f"Approval needed: {proposal.action} on {proposal.asset.name}, {risk} risk",
                f"Proposal {proposal.pk}, {what}, waits for {proposal.approvals_required} "
                f"approval(s): {risk} risk, confidence {proposal.confidence:.2f}.{expires}"
                f"\n\nReview, approve or reject it: {link}\n")
    if kind == NotificationKind.ROLLED_BACK:
        reason = (proposal.rollback or {}).get("reason") or "no reason recorded"
        return (f"Rolled back: {proposal.action} on {proposal.asset.name}",
                f"Proposal {proposal.pk}, {what}, was rolled back "
                f"({proposal.rollback_action}): {reason}{_breach(proposal)}.\n\n"
                f"See what happened: {link}\n")
    if not proposal.rollback_started_at and _breach(proposal):
        return (f"Verification breach, not rolled back: {proposal.action} on "
                f"{proposal.asset.name}",
                f"Proposal {proposal.pk}, {what}, was executed, but the observed telemetry "
                f"left what its simulation predicted{_breach(proposal)}, and it could not be "
                f"rolled back automatically: {_rollback_blocked_reason(proposal)}.\n\n"
                f"Check the asset and act now: {link}\n")
    step = "rollback" if proposal.rollback_started_at else "execution"
    outcome = _outcome(proposal.rollback if step == "rollback" else proposal.execution)
    return (f"{step.capitalize()} failed: {proposal.action} on {proposal.asset.name}",
            f"The {step} of proposal {proposal.pk}, {what}, failed: {outcome}.\n\n"
            f"Check the asset and decide what to do next: {link}\n")


def proposal_message(proposal: Proposal, kind: str, revision: int | None = None) -> Message:
    """The message of ``kind`` about ``proposal``, once per ``revision`` (the revision whose
    commit caused it; default the proposal's own)."""
    from policy.services import serialize

    link = absolute(reverse("dashboard-proposal", args=[proposal.pk]))
    subject, text = _proposal_text(proposal, kind, link)
    return Message(
        kind=kind, twin=proposal.twin, resource_type="proposal", resource_id=str(proposal.pk),
        key=f"{kind}:proposal:{proposal.pk}:{revision or proposal.revision}",
        subject=f"[OpsTwin] {subject} ({proposal.twin.slug})", text=text, link=link,
        data=serialize(proposal),
        skip_user_id=proposal.proposed_by_id if kind == NotificationKind.APPROVAL_NEEDED
        else None)


def notify_proposal(kind: str, proposal_id: int, revision: int) -> int | None:
    """Notify ``kind`` about a proposal as of ``revision``; the notification's id, or None
    when there is nothing to say any more: the proposal is gone, or moved on (an approval
    request for a proposal no longer pending)."""
    proposal = (Proposal.objects.select_related("twin", "asset", "simulation", "proposed_by")
                .filter(pk=proposal_id).first())
    if proposal is None or STATUS_KIND.get(proposal.status) != kind:
        return None
    return notify(proposal_message(proposal, kind, revision)).pk
