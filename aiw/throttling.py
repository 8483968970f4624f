"""Per-token rate limits (DRF throttling on the ``aiw`` cache: Redis when REDIS_URL is set).

Each agent token has its own budget: ``AgentToken.rate`` if set, else ``AIW_TOKEN_RATE``
(e.g. ``"600/min"``). Requests without a token (sessions) are not limited here. A
refused request is 429 with ``Retry-After`` and a problem+json body (the DRF exception
handler in ``twins.problems``).

Algorithm: a fixed window counter per token, incremented atomically (Redis ``INCR``), so
concurrent requests on several processes can never overspend a window. A fixed window allows
a burst of up to twice the rate across a window boundary; that is the price of one atomic
operation per request instead of a read-modify-write of a history list.

The counters live in one instance of the ``aiw`` cache per process (:func:`counter_cache`),
not ``caches["aiw"]``: that hands every thread and every asyncio context its own instance, so
under ASGI each stream and request opened its own Redis connection pool and connection.
"""

from __future__ import annotations

import time
from functools import cache

from django.conf import settings
from django.core.cache import BaseCache, caches
from rest_framework.throttling import BaseThrottle

from aiw.models import AgentToken

CACHE_ALIAS = "aiw"
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"120/min"`` → (120, 60): requests allowed per period of seconds.

    Raises ``ValueError`` for anything not ``<int>/<s|m|h|d...>``.
    """
    count, _, period = rate.partition("/")
    if not count.isdigit() or not period or period[0] not in PERIODS:
        raise ValueError(f"rate {rate!r} is not like '120/min'")
    return int(count), PERIODS[period[0]]


@cache
def counter_cache() -> BaseCache:
    """The ``aiw`` cache as one instance per process, shared by every thread and task.

    ``caches["aiw"]`` is one instance per thread and per asyncio context: every WebSocket or
    SSE stream (and every ASGI request) built a Redis connection pool and connected anew,
    then held that connection until it ended (40% of the web process's CPU while 500
    WebSocket streams connected, ``benchmarks/fanout.py --transport ws`` under py-spy). The
    Redis backend's client is thread-safe (redis-py's connection pool), as is LocMemCache.
    Built from ``CACHES`` on first use: later changes to that setting are not seen.
    """
    return caches.create_connection(CACHE_ALIAS)


class AgentTokenThrottle(BaseThrottle):
    """DRF throttle: one fixed-window counter per agent token."""

    def __init__(self) -> None:
        self.cache = counter_cache()
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        token = getattr(request, "auth", None)
        if not isinstance(token, AgentToken):
            return True
        return self.allow_token(token)

    def allow_token(self, token: AgentToken, now: float | None = None) -> bool:
        """Count one request against ``token``'s budget; False (and ``wait()``) when spent."""
        allowed, period = parse_rate(token.rate or settings.AIW_TOKEN_RATE)
        now = time.time() if now is None else now
        window = int(now // period)
        key = f"aiw:rate:{token.pk}:{window}"
        self.cache.add(key, 0, timeout=period + 1)
        try:
            count = self.cache.incr(key)
        except ValueError:  # the key expired between add and incr: a fresh window
            self.cache.add(key, 1, timeout=period + 1)
            count = 1
        if count <= allowed:
            return True
        self._wait = max((window + 1) * period - now, 0.001)
        return False

    def wait(self) -> float | None:
        """Seconds until the current window ends (DRF turns it into ``Retry-After``)."""
        return self._wait


def retry_after(token: AgentToken) -> float | None:
    """Count one stream connection against ``token``; seconds to wait, or None if allowed."""
    throttle = AgentTokenThrottle()
    return None if throttle.allow_token(token) else throttle.wait()
