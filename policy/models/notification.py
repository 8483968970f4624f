"""Who wants to hear about what (subscriptions), what was said (notifications) and whether it
arrived (deliveries). Written only by ``policy.notifications``; edited by their owner on the
dashboard's notification settings page or by an admin in Django admin."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import URLValidator
from django.db import models

from policy.choices import Channel, DeliveryStatus, NotificationKind


def new_webhook_secret() -> str:
    """A fresh HMAC-SHA256 key for one subscription's webhook: 32 random bytes, URL-safe
    base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def all_kinds() -> list[str]:
    """Every notification kind (a new subscription's default)."""
    return list(NotificationKind.values)


class NotificationSubscription(models.Model):
    """One user's choices: which ``kinds`` for which twins (``all_twins`` or ``twins``), by
    e-mail (to ``user.email``) and/or by a webhook (``webhook_url``, bodies signed with
    ``webhook_secret``).

    A user without a row gets the defaults (``policy.notifications.subscription_of``): every
    kind by e-mail, every twin. Whatever is chosen, a notification about a twin reaches only a
    user who may act on it there (``twins.scoping.may`` with the kind's permission), checked
    at sending time, so a grant revoked later silences it.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="notification_subscription")
    kinds = ArrayField(models.CharField(max_length=32, choices=NotificationKind.choices),
                       default=all_kinds, blank=True)
    all_twins = models.BooleanField(default=True, help_text="Every twin I may act on, "
                                                            "including twins added later.")
    twins = models.ManyToManyField("twins.Twin", blank=True, related_name="+",
                                   help_text="Used when 'all twins' is off.")
    email = models.BooleanField("by e-mail", default=True)
    webhook_url = models.URLField(max_length=500, blank=True,
                                  validators=[URLValidator(schemes=["http", "https"])],
                                  help_text="Receives a signed JSON POST per notification.")
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notifications of {self.user}"

    def covers(self, kind: str, twin_id: int) -> bool:
        """Whether this subscription asks for ``kind`` about the twin with pk ``twin_id``
        (permission aside)."""
        if kind not in self.kinds:
            return False
        return self.all_twins or any(t.pk == twin_id for t in self.twins.all())


class Notification(models.Model):
    """One thing worth telling people, once: ``key`` (kind, resource, revision) is unique so a
    redelivered task never notifies twice. ``payload`` is the webhook body's content
    (notification.v1, README "Notifications"); ``link`` the absolute URL where one acts."""

    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    twin = models.ForeignKey("twins.Twin", on_delete=models.CASCADE, related_name="+")
    resource_type = models.CharField(max_length=32)
    resource_id = models.CharField(max_length=64)
    subject = models.CharField(max_length=300)
    text = models.TextField()
    link = models.CharField(max_length=500)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["resource_type", "resource_id"])]

    def __str__(self) -> str:
        return self.subject


class NotificationDelivery(models.Model):
    """One notification to one user by one channel: ``target`` is the address or URL it was
    sent to, ``attempts`` how many sends were tried, ``response_status`` the webhook's last
    HTTP status. A delivery that exhausts its retries ends ``failed`` with ``last_error``
    (and an ``alert.delivery_failed`` audit entry): never dropped silently."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE,
                                     related_name="deliveries")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "notification deliveries"
        constraints = [models.UniqueConstraint(fields=["notification", "user", "channel"],
                                               name="one_delivery_per_user_and_channel")]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target}: {self.status}"
