"""Agent API tokens: format, hashing and lookup (``Authorization: Bearer aiw_<prefix>_<secret>``).

Only the SHA-256 of a token is stored. A token is found by its prefix and then compared in
constant time, so the lookup costs one indexed query and leaks nothing about other tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from aiw.models import AgentToken

TOKEN_PREFIX = "aiw_"
PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenError(Exception):
    """The presented token is unusable; ``str(exc)`` says why (malformed, unknown, revoked,
    expired). Maps to 401."""


def digest(token: str) -> str:
    """Hex SHA-256 of the whole token text."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate() -> tuple[str, str]:
    """A new random token and its lookup prefix: ``("aiw_<prefix>_<secret>", prefix)``.

    The secret carries 256 bits from ``secrets.token_urlsafe(32)``.
    """
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    return f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _prefix_of(token: str) -> str:
    if not token.startswith(TOKEN_PREFIX):
        raise TokenError("malformed token")
    prefix, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not sep or len(prefix) != PREFIX_LENGTH or not secret:
        raise TokenError("malformed token")
    return prefix


def lookup(token: str) -> AgentToken:
    """The active AgentToken for ``token`` (with its user loaded); records ``last_used_at``.

    Raises ``TokenError`` when the token is malformed, unknown, revoked, expired or belongs to
    an inactive user. ``last_used_at`` is written at most once a minute per token (a
    conditional UPDATE), so busy agents do not turn every read into a write.
    """
    found = AgentToken.objects.select_related("user").filter(prefix=_prefix_of(token)).first()
    if found is None or not hmac.compare_digest(found.digest, digest(token)):
        raise TokenError("unknown token")
    now = timezone.now()
    if found.revoked_at is not None:
        raise TokenError("token revoked")
    if found.expires_at is not None and found.expires_at <= now:
        raise TokenError("token expired")
    if not found.user.is_active:
        raise TokenError("the token's user is inactive")
    cutoff = now - LAST_USED_RESOLUTION
    if found.last_used_at is None or found.last_used_at < cutoff:
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff)
        AgentToken.objects.filter(stale, pk=found.pk).update(last_used_at=now)
    return found


def still_active(token_id: int) -> bool:
    """True while the token with ``token_id`` is neither revoked nor expired (stream checks)."""
    token = AgentToken.objects.filter(pk=token_id).select_related("user").first()
    return token is not None and token.is_active() and token.user.is_active
