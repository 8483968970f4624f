"""Database calls from async code (streams, the hub) on a small shared thread pool.

Django opens one connection per thread. ``sync_to_async(thread_sensitive=True)`` inside an
ASGI request runs in a thread owned by that request, so 500 open SSE streams would hold 500
threads, each with its own PostgreSQL connection. Stream code therefore runs its queries on
the event loop's default executor (``thread_sensitive=False``): a handful of threads whose
connections are reused by every stream of the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def _call(fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
    try:
        return fn(*args, **kwargs)
    except (InterfaceError, OperationalError):
        # The pooled connection died (server restart, idle timeout): reconnect once.
        # Callers pass reads and idempotent writes only, so a retry is safe.
        connection.close()
        return fn(*args, **kwargs)


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the shared pool; returns its result, raises its errors."""
    return await sync_to_async(_call, thread_sensitive=False)(fn, args, kwargs)
