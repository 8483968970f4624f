"""The id of the request (or of the task it started) that the current code runs for.

``opstwin_site.request_log`` sets it per HTTP request (from a valid ``X-Request-ID`` or a new
one) and carries it into Celery tasks in a message header, so an audit entry written by a
task that a request queued names the same id as the request's log lines
(``twins.ledger.record_change``). It lives in the bottom layer because the ledger reads it.
"""

from __future__ import annotations

from contextvars import ContextVar

#: ``"-"`` outside any request or task.
request_id: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The current request id, or ``""`` outside any request or task."""
    value = request_id.get()
    return "" if value == "-" else value
