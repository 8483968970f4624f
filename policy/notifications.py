"""Notifications that reach people: who is told (subscriptions and permissions), the record
of what was said (audited), and delivery by e-mail or signed webhook with bounded retries.

Flow: a service's state change schedules a Celery task on commit (``notify_on_commit`` in
``policy.services.common``; the escalation job's hand-off in ``policy.alerts``); the task
builds a ``Message`` and calls ``notify``, which in one transaction stores the
``Notification`` (once per ``key``), one ``NotificationDelivery`` per recipient and channel,
and an audit entry naming the recipients; then each delivery is queued
(``policy.tasks.deliver_notification``). ``deliver`` sends one; the task retries a failure
with exponential backoff (``backoff``) up to ``NOTIFY_MAX_RETRIES`` times, then ``give_up``
records it failed and audits ``alert.delivery_failed``.

Recipients of a notification about twin T: active users whose subscription (or the default:
every kind, every twin, by e-mail) covers the kind and T, who may act on it there
(``twins.scoping.may`` with ``KIND_PERMISSION``), and who have an address (an e-mail, a
webhook URL). Checked when the notification is made.

Subscriptions change only through ``save_subscription`` and ``delete_subscription``, which
check the webhook URL (``policy.webhooks.refusal``) and audit the change
(``notification_subscription.created|updated|deleted``, twin-less: the actor and admins see it
on the feed) with the notification-subscription.v1 state: the webhook's origin and
fingerprints, never its secret or its full URL (a URL may itself be a credential).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from smtplib import SMTPException
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from policy import webhooks
from policy.choices import Channel, DeliveryStatus, NotificationKind
from policy.models import Notification, NotificationDelivery, NotificationSubscription
from telemetry.anomalies import ACKNOWLEDGE_PERMISSION
from twins.ledger import canonical_json, jsonable, record_change
from twins.models import Twin
from twins.scoping import may

#: The permission a recipient needs on the twin (with operate rights: ``may``): the one that
#: lets them act on what they are told.
KIND_PERMISSION = {
    NotificationKind.APPROVAL_NEEDED: "policy.approve_proposal",
    NotificationKind.ANOMALY_ESCALATED: ACKNOWLEDGE_PERMISSION,
    NotificationKind.EXECUTION_FAILED: "policy.rollback_proposal",
    NotificationKind.ROLLED_BACK: "policy.rollback_proposal",
}
#: The audit action recording that a notification was sent.
AUDIT_ACTION = {
    NotificationKind.APPROVAL_NEEDED: "alert.approval_needed",
    NotificationKind.ANOMALY_ESCALATED: "alert.escalation",
    NotificationKind.EXECUTION_FAILED: "alert.execution_failed",
    NotificationKind.ROLLED_BACK: "alert.rolled_back",
}
SCHEMA = "notification.v1"
log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """One send did not go through: the task retries it, unless ``permanent`` (a webhook
    target that is refused, ``policy.webhooks.WebhookRefused``), then it gives up at once."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Message:
    """What to tell, about which resource: ``key`` makes it once-only (kind, resource and the
    resource's revision), ``link`` is the absolute URL where the recipient acts, ``data`` the
    resource's JSON state (``proposal.v1``, ``anomaly.v1``) for the webhook body and the
    audit entry."""

    kind: str
    twin: Twin
    resource_type: str
    resource_id: str
    key: str
    subject: str
    text: str
    link: str
    data: dict
    skip_user_id: int | None = None  # someone not to tell (a proposer cannot approve their own)

    def payload(self) -> dict:
        """The webhook body without its delivery id (notification.v1)."""
        return {"schema": SCHEMA, "kind": self.kind, "twin": self.twin.slug,
                "resource": {"type": self.resource_type, "id": self.resource_id},
                "subject": self.subject, "text": self.text, "link": self.link,
                "created_at": timezone.now().isoformat(), "data": jsonable(self.data)}


def absolute(path: str) -> str:
    """``PUBLIC_URL`` + ``path`` (the path alone when PUBLIC_URL is unset)."""
    return f"{settings.PUBLIC_URL}{path}"


def subscription_of(user) -> NotificationSubscription:
    """The user's saved subscription, or the default one (unsaved): every kind, every twin
    the user may act on, by e-mail."""
    try:
        return user.notification_subscription
    except ObjectDoesNotExist:
        return NotificationSubscription(user=user)


class SubscriptionInvalid(ValueError):
    """A subscription that may not be saved; ``errors`` maps a field name to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def fingerprint(text: str) -> str | None:
    """``sha256:<first 16 hex digits>`` of ``text`` (None for ""): tells two values apart in
    the audit log without revealing them."""
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}" if text else None


def subscription_state(subscription: NotificationSubscription,
                       twin_slugs: list[str] | None = None) -> dict:
    """notification-subscription.v1 of ``subscription``: kinds (sorted), twins (slugs, sorted;
    ``twin_slugs`` overrides the stored ones), channels, the webhook as ``{"origin":
    "https://host[:port]", "fingerprint"}`` (None without one) and the secret's fingerprint."""
    url = subscription.webhook_url
    webhook = None
    if url:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        webhook = {"origin": origin, "fingerprint": fingerprint(url)}
    if twin_slugs is None:
        twin_slugs = [t.slug for t in subscription.twins.all()] if subscription.pk else []
    return {"id": subscription.pk, "user": subscription.user.get_username(),
            "kinds": sorted(subscription.kinds), "all_twins": subscription.all_twins,
            "twins": sorted(twin_slugs), "email": subscription.email, "webhook": webhook,
            "webhook_secret": {"set": bool(subscription.webhook_secret),
                               "fingerprint": fingerprint(subscription.webhook_secret)},
            "updated_at": subscription.updated_at}


def _comparable(state: dict | None) -> dict | None:
    return None if state is None else {k: v for k, v in state.items()
                                      if k not in ("id", "updated_at")}


def save_subscription(subscription: NotificationSubscription, *, twins=None,
                      new_secret: bool = False, actor=None,
                      request=None) -> NotificationSubscription:
    """Create or update ``subscription`` (its fields already set, saved or not) with
    ``twins`` (Twins; None keeps the stored ones) and, if ``new_secret``, a fresh webhook
    secret. Audited as ``notification_subscription.created``/``.updated`` by ``actor`` (a
    user or a component name) with before/after states; a save that changes nothing writes
    nothing. Raises SubscriptionInvalid if the webhook URL is refused
    (``policy.webhooks.refusal``: scheme, private address not on the allow-list)."""
    from policy.models.notification import new_webhook_secret

    why = webhooks.refusal(subscription.webhook_url) if subscription.webhook_url else None
    if why:
        raise SubscriptionInvalid({"webhook_url": why})
    with transaction.atomic():
        stored = (NotificationSubscription.objects.select_for_update()
                  .select_related("user").filter(pk=subscription.pk).first()
                  if subscription.pk else None)
        before = subscription_state(stored) if stored else None
        kept = before["twins"] if before else []
        slugs = [t.slug for t in twins] if twins is not None else kept
        if new_secret:
            subscription.webhook_secret = new_webhook_secret()
        if _comparable(subscription_state(subscription, slugs)) == _comparable(before):
            return subscription
        subscription.save()
        if twins is not None:
            subscription.twins.set(twins)
        after = subscription_state(subscription, slugs)
        operation = "updated" if stored else "created"
        record_change(actor=actor, action=f"notification_subscription.{operation}",
                      resource_type="notification_subscription", resource_id=subscription.pk,
                      operation=operation, before=before, after=after, request=request,
                      reason=f"notifications of {subscription.user.get_username()}"
                             + (": webhook secret replaced" if new_secret else ""))
    return subscription


def delete_subscription(subscription: NotificationSubscription, *, actor=None,
                        request=None, reason: str = "") -> None:
    """Delete ``subscription`` (its user is back to the defaults: every kind, every twin, by
    e-mail); audited as ``notification_subscription.deleted`` with its last state and
    ``reason`` (default: the user is back to the defaults)."""
    with transaction.atomic():
        stored = (NotificationSubscription.objects.select_for_update().select_related("user")
                  .filter(pk=subscription.pk).first())
        if stored is None:
            return
        before, pk = subscription_state(stored), stored.pk
        stored.delete()
        _record_deleted(pk, before, actor=actor, request=request,
                        reason=reason or f"notifications of {stored.user.get_username()}: "
                                         "back to the defaults")


def _record_deleted(pk: int, before: dict, *, actor, request, reason: str) -> None:
    record_change(actor=actor, action="notification_subscription.deleted",
                  resource_type="notification_subscription", resource_id=pk,
                  operation="deleted", before=before, after=None, request=request,
                  reason=reason)


def remember_subscription(sender, instance, **kwargs) -> None:
    """``pre_delete`` receiver for the user model: lock the user's subscription row and keep
    its last state on the instance (``opstwin_subscription``) for ``forget_deleted_user``. Only
    a row lock here: the audit entry waits until the deletion holds its row locks (the ledger's
    lock order, ``twins.ledger``)."""
    subscription = (NotificationSubscription.objects.select_for_update()
                    .select_related("user").filter(user=instance).first())
    if subscription is not None:
        instance.opstwin_subscription = (subscription.pk, subscription_state(subscription))


def forget_deleted_user(sender, instance, **kwargs) -> None:
    """``post_delete`` receiver for the user model: the subscription the cascade removed with
    the user is audited as ``notification_subscription.deleted`` (state kept by
    ``remember_subscription``), in the deletion's transaction, so the entry commits with it or
    not at all. The actor is the system: a model signal does not know who deleted the user."""
    remembered = getattr(instance, "opstwin_subscription", None)
    if remembered is not None:
        pk, before = remembered
        _record_deleted(pk, before, actor=None, request=None,
                        reason=f"user {instance.get_username()} deleted")


def recipients(kind: str, twin: Twin, skip_user_id: int | None = None) -> list[tuple]:
    """``(user, channel, target)`` for everyone to tell about ``kind`` on ``twin`` (but the
    user ``skip_user_id``), by username: target is the e-mail address or the webhook URL."""
    users = (get_user_model().objects.filter(is_active=True).exclude(pk=skip_user_id)
             .filter(Q(email__gt="") | Q(notification_subscription__webhook_url__gt=""))
             .select_related("notification_subscription")
             .prefetch_related("notification_subscription__twins").order_by("username"))
    found = []
    for user in users:
        subscription = subscription_of(user)
        if not subscription.covers(kind, twin.pk) or not may(user, KIND_PERMISSION[kind], twin):
            continue
        if subscription.email and user.email:
            found.append((user, Channel.EMAIL, user.email))
        if subscription.webhook_url:
            found.append((user, Channel.WEBHOOK, subscription.webhook_url))
    return found


def _told(targets: list[tuple]) -> str:
    said = [target if channel == Channel.EMAIL
            else f"{user.get_username()}'s webhook at {urlsplit(target).hostname}"
            for user, channel, target in targets]
    return ", ".join(said) or "nobody (no subscriber with an address may act on it)"


def notify(message: Message) -> Notification:
    """Record ``message`` once, with its deliveries and an audit entry, then queue each
    pending delivery. Called again with the same key (a redelivered task), it records nothing
    new and re-queues what is still pending. Returns the notification."""
    with transaction.atomic():
        notification, created = Notification.objects.get_or_create(key=message.key, defaults={
            "kind": message.kind, "twin": message.twin, "resource_type": message.resource_type,
            "resource_id": message.resource_id, "subject": message.subject[:300],
            "text": message.text, "link": message.link, "payload": message.payload()})
        if created:
            targets = recipients(message.kind, message.twin, message.skip_user_id)
            NotificationDelivery.objects.bulk_create(
                NotificationDelivery(notification=notification, user=user, channel=channel,
                                     target=target) for user, channel, target in targets)
            record_change(actor="alerts", action=AUDIT_ACTION[message.kind],
                          resource_type=message.resource_type, resource_id=message.resource_id,
                          operation="updated", twin=message.twin, after=message.data,
                          reason=f"{message.subject}: notified {_told(targets)}; "
                                 f"{message.link}")
    for delivery_id in notification.deliveries.filter(status=DeliveryStatus.PENDING) \
            .order_by("pk").values_list("pk", flat=True):
        try:
            enqueue_delivery(delivery_id)
        except Exception:  # one unqueued delivery stays pending (visible); queue the others
            log.exception("delivery %s of notification %s not queued", delivery_id,
                          notification.pk)
    return notification


def enqueue_delivery(delivery_id: int) -> None:
    """Queue one delivery (``policy.tasks.deliver_notification``)."""
    from policy.tasks import deliver_notification

    deliver_notification.delay(delivery_id)


def backoff(retries: int) -> float:
    """Seconds to wait before retry number ``retries + 1``: NOTIFY_BACKOFF_SECONDS *
    2**retries, at most NOTIFY_BACKOFF_MAX_SECONDS."""
    return min(settings.NOTIFY_BACKOFF_SECONDS * 2 ** retries,
               settings.NOTIFY_BACKOFF_MAX_SECONDS)


def _send(delivery: NotificationDelivery) -> int | None:
    notification = delivery.notification
    if delivery.channel == Channel.EMAIL:
        try:
            send_mail(notification.subject, notification.text, from_email=None,
                      recipient_list=[delivery.target])
        except (SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        return None
    subscription = subscription_of(delivery.user)
    body = canonical_json(notification.payload | {"delivery": delivery.pk})
    try:
        return webhooks.post(delivery.target, body, secret=subscription.webhook_secret,
                             delivery_id=delivery.pk, event=notification.kind,
                             timeout_s=settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS)
    except webhooks.WebhookFailed as exc:
        delivery.response_status = exc.status
        raise DeliveryFailed(str(exc),
                             permanent=isinstance(exc, webhooks.WebhookRefused)) from exc


def deliver(delivery_id: int) -> str:
    """Send one pending delivery; returns its status (``delivered``, or what it already was).

    Raises DeliveryFailed after recording the attempt (count, error, HTTP status). The row is
    locked while sending (``SKIP LOCKED``: a second worker holding the same redelivered task
    finds nothing to do), so one delivery is never sent twice at once.
    """
    error = None
    with transaction.atomic():
        delivery = (NotificationDelivery.objects.select_for_update(skip_locked=True)
                    .select_related("notification", "user")
                    .filter(pk=delivery_id, status=DeliveryStatus.PENDING).first())
        if delivery is None:
            current = NotificationDelivery.objects.filter(pk=delivery_id).first()
            return current.status if current else "gone"
        delivery.attempts += 1
        try:
            delivery.response_status = _send(delivery)
            delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, timezone.now()
            delivery.last_error = ""
        except DeliveryFailed as exc:
            error, delivery.last_error = exc, str(exc)
        delivery.save(update_fields=["attempts", "response_status", "status", "delivered_at",
                                     "last_error"])
    if error is not None:
        raise error
    return delivery.status


def give_up(delivery_id: int, error: str) -> NotificationDelivery:
    """Record a delivery that exhausted its retries as failed, with an
    ``alert.delivery_failed`` audit entry on the notification's resource."""
    with transaction.atomic():
        delivery = (NotificationDelivery.objects.select_for_update()
                    .select_related("notification__twin", "user").get(pk=delivery_id))
        if delivery.status != DeliveryStatus.PENDING:
            return delivery
        delivery.status, delivery.last_error = DeliveryStatus.FAILED, error
        delivery.save(update_fields=["status", "last_error"])
        notification = delivery.notification
        record_change(actor="alerts", action="alert.delivery_failed",
                      resource_type=notification.resource_type,
                      resource_id=notification.resource_id, operation="updated",
                      twin=notification.twin, after=notification.payload.get("data"),
                      reason=f"{notification.subject}: {delivery.get_channel_display()} to "
                             f"{delivery.user.get_username()} failed after "
                             f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}"
                             f": {error}")
    return delivery


def requeue_unsent(older_than_s: float, now=None) -> int:
    """Queue again every delivery still pending with no attempt ``older_than_s`` seconds after
    it was made (its queueing failed, e.g. the broker was down); returns how many. Safe to
    race the original task: ``deliver`` sends a delivery once (row lock, status check)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=older_than_s)
    ids = list(NotificationDelivery.objects.filter(
        status=DeliveryStatus.PENDING, attempts=0, created_at__lt=cutoff)
        .order_by("pk").values_list("pk", flat=True))
    for delivery_id in ids:
        enqueue_delivery(delivery_id)
    return len(ids)
