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
from twins.models import ChangeEvent

log = logging.getLogger(__name__)


def issue_token(
    *, user, name: str, scopes: list[str] | None = None, expires_at: datetime | None = None,
    rate: str = "",
) -> tuple[AgentToken, str]:
    """Create an AgentToken for ``user``; returns ``(token_row, plaintext)``.

    The plaintext is shown once and never stored. ``scopes`` defaults to ``["read"]``; unknown
    scopes raise ``ValueError``.
    """
    scopes = sorted(set(scopes or [TokenScope.READ]))
    unknown = set(scopes) - set(TokenScope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    plaintext, prefix = tokens.generate()
    row = AgentToken.objects.create(user=user, name=name, prefix=prefix,
                                    digest=tokens.digest(plaintext), scopes=scopes,
                                    expires_at=expires_at, rate=rate)
    log.info("issued agent token %s (aiw_%s_…) for %s", name, prefix, user)
    return row, plaintext


def revoke_token(token_id: int) -> bool:
    """Revoke the token; True if this call revoked it, False if it already was (or is gone).

    A conditional UPDATE on ``revoked_at IS NULL``, so two revocations record one time.
    """
    changed = AgentToken.objects.filter(pk=token_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now())
    if changed:
        log.info("revoked agent token %s", token_id)
    return changed == 1


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
