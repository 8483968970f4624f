"""``Idempotency-Key`` for every state-changing API request (POST, PUT, PATCH, DELETE).

A client that may retry sends ``Idempotency-Key: <1-255 printable characters>``. Per caller
and key, the first request runs and its response (status, content type, body) is stored in
PostgreSQL (``IdempotencyKey``) for ``AIW_IDEMPOTENCY_TTL_HOURS``:

- the same key with the same request (method, path, body) replays the stored response, with
  ``Idempotent-Replayed: true``, without running the view again;
- the same key with a different request is 409; so is a retry while the first is running;
- 5xx and 429 answers are not stored, so retrying them runs the request again.

The claim is an INSERT on the unique (user, key) pair, so two concurrent first requests can
never both run. A claim left by a crashed process is taken over after
``AIW_IDEMPOTENCY_LOCK_SECONDS``. Requests without the header are untouched.
Pattern: pretix's idempotency middleware; header per draft-ietf-httpapi-idempotency-key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from aiw import tokens
from aiw.models import IdempotencyKey
from twins.problems import is_api_request, problem

HEADER = "Idempotency-Key"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNSTORED_STATUSES = frozenset({429})


@dataclass(frozen=True)
class Outcome:
    """Result of claiming a key: a response to return at once, or a claim to complete."""

    response: HttpResponse | None = None
    claim: IdempotencyKey | None = None


def fingerprint(request: HttpRequest) -> str:
    """SHA-256 of method, full path (with query) and body: what 'the same request' means."""
    sha = hashlib.sha256()
    for part in (request.method.encode(), request.get_full_path().encode(), request.body):
        sha.update(len(part).to_bytes(8, "big") + part)
    return sha.hexdigest()


def caller(request: HttpRequest):
    """The authenticated user behind ``request`` before DRF runs, or None.

    Bearer token, then the session, as the DRF authentication classes would decide; an
    invalid credential gives None (the view will answer 401 itself).
    """
    authorization = request.headers.get("Authorization", "")
    raw = tokens.bearer_token(authorization)
    if raw is not None:
        try:
            return tokens.lookup(raw).user
        except tokens.TokenError:
            return None
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _expired_or_abandoned(user, key: str) -> None:
    now = timezone.now()
    lock = timedelta(seconds=settings.AIW_IDEMPOTENCY_LOCK_SECONDS)
    IdempotencyKey.objects.filter(user=user, key=key, expires_at__lte=now).delete()
    IdempotencyKey.objects.filter(user=user, key=key, status__isnull=True,
                                  created_at__lte=now - lock).delete()


def claim(user, key: str, print_: str) -> Outcome:
    """Claim ``key`` for ``user``, or say how to answer a repeated key at once."""
    _expired_or_abandoned(user, key)
    now = timezone.now()
    try:
        with transaction.atomic():
            row = IdempotencyKey.objects.create(
                user=user, key=key, fingerprint=print_, created_at=now,
                expires_at=now + timedelta(hours=settings.AIW_IDEMPOTENCY_TTL_HOURS))
        return Outcome(claim=row)
    except IntegrityError:
        existing = IdempotencyKey.objects.filter(user=user, key=key).first()
    if existing is None:  # expired and purged between our insert and read: simply retry
        return claim(user, key, print_)
    return Outcome(response=_answer_repeat(existing, print_))


def _answer_repeat(existing: IdempotencyKey, print_: str) -> HttpResponse:
    if existing.fingerprint != print_:
        return problem(409, "Idempotency key reused",
                       "this Idempotency-Key was already used for a different request")
    if existing.status is None:
        return problem(409, "Request in progress",
                       "a request with this Idempotency-Key is still running; retry later",
                       headers={"Retry-After": "1"})
    response = HttpResponse(bytes(existing.body), status=existing.status,
                            content_type=existing.content_type or None)
    response["Idempotent-Replayed"] = "true"
    return response


def complete(row: IdempotencyKey, response: HttpResponse) -> None:
    """Store ``response`` for the claimed key, or release the claim if it must not be kept."""
    if response.streaming or response.status_code >= 500 or \
            response.status_code in UNSTORED_STATUSES:
        IdempotencyKey.objects.filter(pk=row.pk).delete()
        return
    IdempotencyKey.objects.filter(pk=row.pk).update(
        status=response.status_code, content_type=response.get("Content-Type", ""),
        body=response.content)


def _bad_key(key: str) -> bool:
    return not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii()


class IdempotencyMiddleware:
    """Applies the rules above to unsafe API requests that carry ``Idempotency-Key``."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get(HEADER)
        if key is None or request.method not in UNSAFE_METHODS or not is_api_request(request):
            return self.get_response(request)
        if _bad_key(key):
            return problem(400, "Invalid Idempotency-Key", "use 1-255 printable ASCII characters")
        user = caller(request)
        if user is None:
            return self.get_response(request)  # the view answers 401/403 itself
        try:
            outcome = claim(user, key, fingerprint(request))
        except RequestDataTooBig:
            return problem(413, "Body too large",
                           "bodies above DATA_UPLOAD_MAX_MEMORY_SIZE cannot be idempotent")
        if outcome.response is not None:
            return outcome.response
        try:
            response = self.get_response(request)
        except BaseException:
            IdempotencyKey.objects.filter(pk=outcome.claim.pk).delete()
            raise
        complete(outcome.claim, response)
        return response
