"""The only code that changes AIW state: agent tokens, feed retention, idempotency purge.

Tokens are credentials, not plant state: like users and role grants they are managed in Django
admin (whose LogEntry records who did it) and are not published on the change feed, which
every authenticated caller can read.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aiw import tokens
from aiw.models import AgentToken, FeedRetention, IdempotencyKey, TokenScope
from twins.ledger import record_change
from twins.models import ChangeEvent

log = logging.getLogger(__name__)


def token_state(token: AgentToken) -> dict:
    """agent-token.v1 of ``token``: what the feed and the audit log show (never the secret)."""
    return {"id": token.pk, "name": token.name, "user": token.user.get_username(),
            "prefix": token.prefix, "scopes": sorted(token.scopes), "rate": token.rate,
            "created_at": token.created_at, "expires_at": token.expires_at,
            "revoked_at": token.revoked_at}


def _record_token(token: AgentToken, *, action: str, operation: str, before: dict | None,
                  actor, request) -> None:
    record_change(actor=actor, action=action, resource_type="agent_token",
                  resource_id=token.pk, operation=operation, before=before,
                  after=token_state(token), request=request)


def issue_token(
    *, user, name: str, scopes: list[str] | None = None, expires_at: datetime | None = None,
    rate: str = "", actor=None, request=None,
) -> tuple[AgentToken, str]:
    """Create an AgentToken for ``user``; returns ``(token_row, plaintext)``.

    The plaintext is shown once and never stored. ``scopes`` defaults to ``["read"]``; unknown
    scopes raise ``ValueError``. Audited as ``agent_token.issue`` by ``actor`` (a user or a
    component name; None: system) and on the feed (twin-less: admins and the actor see it).
    """
    scopes = sorted(set(scopes or [TokenScope.READ]))
    unknown = set(scopes) - set(TokenScope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    plaintext, prefix = tokens.generate()
    with transaction.atomic():
        row = AgentToken.objects.create(user=user, name=name, prefix=prefix,
                                        digest=tokens.digest(plaintext), scopes=scopes,
                                        expires_at=expires_at, rate=rate)
        _record_token(row, action="agent_token.issue", operation="created", before=None,
                      actor=actor, request=request)
    log.info("issued agent token %s (aiw_%s_…) for %s", name, prefix, user)
    return row, plaintext


def revoke_token(token_id: int, *, actor=None, request=None) -> bool:
    """Revoke the token; True if this call revoked it, False if it already was (or is gone).

    A conditional UPDATE on ``revoked_at IS NULL``, so two revocations record one time; the
    one that revokes is audited as ``agent_token.revoke``.
    """
    with transaction.atomic():
        token = AgentToken.objects.select_for_update().filter(
            pk=token_id, revoked_at__isnull=True).select_related("user").first()
        changed = 0
        if token is not None:
            before = token_state(token)
            token.revoked_at = timezone.now()
            changed = AgentToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(
                revoked_at=token.revoked_at)
            _record_token(token, action="agent_token.revoke", operation="updated",
                          before=before, actor=actor, request=request)
    if changed:
        log.info("revoked agent token %s", token_id)
    return changed == 1


def update_token(token: AgentToken, *, expires_at: datetime | None, rate: str, actor=None,
                 request=None) -> AgentToken:
    """Change a token's expiry and rate limit (the only editable fields); audited as
    ``agent_token.update``. Scopes, user and name are fixed at issue: issue a new token."""
    with transaction.atomic():
        stored = AgentToken.objects.select_for_update().select_related("user").get(pk=token.pk)
        before = token_state(stored)
        stored.expires_at, stored.rate = expires_at, rate
        stored.save(update_fields=["expires_at", "rate"])
        _record_token(stored, action="agent_token.update", operation="updated", before=before,
                      actor=actor, request=request)
    return stored


def prune_feed(*, older_than: timedelta | None = None) -> int:
    """Delete change events older than ``older_than`` (default ``AIW_FEED_RETENTION_DAYS``).

    Returns the number deleted. Records the highest deleted id in FeedRetention (under a row
    lock) so cursors into the deleted range get 410 "expired" instead of a silent gap.
    ``AIW_FEED_RETENTION_DAYS = 0`` keeps the feed forever.
    """
    if older_than is None:
        if not settings.AIW_FEED_RETENTION_DAYS:
            return 0
        older_than = timedelta(days=settings.AIW_FEED_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    with transaction.atomic():
        retention, _ = FeedRetention.objects.select_for_update().get_or_create(pk=1)
        doomed = ChangeEvent.objects.filter(created_at__lt=cutoff)
        highest = doomed.order_by("-id").values_list("id", flat=True).first()
        if highest is None:
            return 0
        count, _ = ChangeEvent.objects.filter(id__lte=highest).delete()
        retention.pruned_through = max(retention.pruned_through, highest)
        retention.pruned_at = timezone.now()
        retention.save()
    return count


def purge_idempotency_keys() -> int:
    """Delete expired idempotency records; returns how many."""
    count, _ = IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).delete()
    return count
