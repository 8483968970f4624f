"""Who is calling: agent tokens for DRF views, SSE streams and WebSockets.

``Authorization: Bearer aiw_<prefix>_<secret>`` authenticates as the token's user, narrowed by
the token's scopes: ``read`` for safe methods and streams, ``write`` for POST/PUT/PATCH/DELETE.
An unknown, revoked or expired token is 401 (never a silent fall-back to anonymous).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http import parse_cookie
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS

from aiw import tokens
from aiw.db import run_db
from aiw.models import AgentToken, TokenScope

REALM = 'Bearer realm="opstwin"'


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, and the token it presented (None for a session)."""

    user: Any
    token: AgentToken | None = None

    @property
    def key(self) -> str:
        """Identity for rate limits and stream counts: ``token:<id>`` or ``user:<id>``."""
        return f"token:{self.token.pk}" if self.token else f"user:{self.user.pk}"


class ScopeMissing(exceptions.PermissionDenied):
    """The token is valid but lacks the scope this request needs (403)."""


def required_scope(method: str) -> str:
    """``read`` for GET/HEAD/OPTIONS, ``write`` for everything else."""
    return (TokenScope.READ if method.upper() in SAFE_METHODS else TokenScope.WRITE).value


def check_token(raw: str, method: str) -> AgentToken:
    """The active token for ``raw`` allowed to make a ``method`` request.

    Raises ``AuthenticationFailed`` (401) for an unusable token, ``ScopeMissing`` (403) for a
    missing scope.
    """
    try:
        token = tokens.lookup(raw)
    except tokens.TokenError as exc:
        raise exceptions.AuthenticationFailed(str(exc)) from exc
    needed = required_scope(method)
    if not token.allows(needed):
        raise ScopeMissing(f"the token lacks the {needed!r} scope")
    return token


class AgentTokenAuthentication(BaseAuthentication):
    """DRF authentication for ``Authorization: Bearer <token>``; ``request.auth`` is the
    AgentToken. Listed first in REST_FRAMEWORK so unauthenticated calls get 401 with a
    ``WWW-Authenticate: Bearer`` challenge rather than 403."""

    def authenticate(self, request) -> tuple[Any, AgentToken] | None:
        raw = tokens.bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            return None
        token = check_token(raw, request.method)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return REALM


def authenticate_stream(request) -> Principal | None:
    """The caller of a plain (non-DRF) GET view: bearer token first, then the session.

    Returns None for anonymous callers; raises as ``check_token``. Runs queries, so call it
    through ``aiw.db.run_db`` from async views.
    """
    raw = tokens.bearer_token(request.headers.get("Authorization"))
    if raw is not None:
        token = check_token(raw, "GET")
        return Principal(token.user, token)
    user = request.user  # lazy: the session lookup happens here, on the calling thread
    return Principal(user) if user.is_authenticated else None


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin1")
    return None


async def authenticate_socket(scope: dict) -> Principal:
    """The caller of a WebSocket handshake (ASGI ``scope``): a Bearer token first, else the
    session cookie's user (the session engine's store, checked as Django's ``get_user``
    does, through channels' ``get_user``).

    Raises ``AuthenticationFailed`` (401) or ``ScopeMissing`` (403) as ``check_token`` does,
    ``NotAuthenticated`` (401) without a token or a logged-in session. Runs queries.
    """
    raw = tokens.bearer_token(_header(scope, b"authorization"))
    if raw is not None:
        token = await run_db(check_token, raw, "GET")
        return Principal(token.user, token)
    session_key = parse_cookie(_header(scope, b"cookie") or "").get(settings.SESSION_COOKIE_NAME)
    if session_key:
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = await get_user({"session": session})
        if user.is_authenticated:
            return Principal(user)
    raise exceptions.NotAuthenticated()


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a cookie-session WebSocket handshake from ``origin`` may proceed.

    Allowed: the page's own origin (``Origin``'s host:port equals the ``Host`` header, which a
    victim's browser sets to the real server, so a cross-site page cannot fake it) or an
    exact entry of ``CSRF_TRUSTED_ORIGINS`` (scheme://host[:port]), as Django's CSRF check does
    for form posts. ``ALLOWED_HOSTS`` plays no part (it may be ``*`` behind a proxy); a missing
    or ``null`` Origin is refused.
    """
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host


class TokenOrOriginValidator:
    """WebSocket guard: cookie sessions need an allowed Origin (``origin_allowed``: cross-site
    WebSocket hijacking protection); a handshake carrying a Bearer token is not ambient
    authority, so it needs none."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if tokens.bearer_token(_header(scope, b"authorization")) is not None:
            return await self.application(scope, receive, send)
        if origin_allowed(_header(scope, b"origin"), _header(scope, b"host")):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
