"""Feed retention, agents' API tokens and idempotency records (the change feed itself is
``twins.models.ChangeEvent``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class FeedRetention(models.Model):
    """The single row recording how far the feed has been pruned (``pruned_through`` = an id).

    A cursor below ``pruned_through`` points into deleted history, so it is answered with 410
    and the snapshot endpoint (see ``aiw.feed.decode_cursor`` and ``aiw.services.prune_feed``).
    """

    pruned_through = models.BigIntegerField(default=0)
    pruned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"feed pruned through {self.pruned_through}"


class TokenScope(models.TextChoices):
    """What an agent token may do on top of its user's permissions."""

    READ = "read", "Read (GET, diff, streams)"
    WRITE = "write", "Write (POST, PUT, PATCH, DELETE)"


def _default_scopes() -> list[str]:
    return [TokenScope.READ]


class AgentToken(models.Model):
    """An API token an agent presents as ``Authorization: Bearer <token>``.

    The token is ``aiw_<prefix>_<secret>``; only its SHA-256 (``digest``, hex) is stored and
    ``prefix`` (8 characters, unique) finds the row. The token acts as ``user`` (whose role
    group and django-guardian per-twin grants apply), narrowed by ``scopes`` (``read``,
    ``write``). ``rate`` overrides the default per-token rate limit (e.g. ``"120/min"``).
    Expired (``expires_at`` past) or revoked tokens are refused with 401.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=_default_scopes)
    rate = models.CharField(max_length=32, blank=True,
                            help_text='e.g. "120/min"; blank uses AIW_TOKEN_RATE')
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (aiw_{self.prefix}_…, {self.user})"

    def is_active(self, now=None) -> bool:
        """True when the token is neither revoked nor expired at ``now`` (default: now)."""
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows(self, scope: str) -> bool:
        """True when ``scope`` (``read``/``write``) is granted to this token."""
        return scope in self.scopes


class IdempotencyKey(models.Model):
    """The stored outcome of one state-changing request sent with an ``Idempotency-Key``.

    Keyed per (user, key). ``fingerprint`` is the SHA-256 of method, path and body, so reusing
    a key for a different request is detected (409). ``status`` is None while the first
    request is still running; afterwards ``status``/``content_type``/``body`` replay it.
    Rows expire at ``expires_at`` (``AIW_IDEMPOTENCY_TTL_HOURS``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=128, blank=True)
    body = models.BinaryField(default=b"")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key} ({self.status or 'in progress'})"
