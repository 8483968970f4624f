"""Request ids and structured (JSON) logs.

Every HTTP request gets an id: the caller's ``X-Request-ID`` when it is a plausible one (1-64
characters of ``A-Za-z0-9._-``), else a new UUID4 hex. ``RequestIdMiddleware`` keeps it in a
context variable for the span of the request (asgiref copies context variables into the
threads of ``sync_to_async``, so sync views and the ORM see it too) and returns it in the
``X-Request-ID`` response header. ``RequestIdFilter`` stamps it on every log record
(``record.request_id``; ``-`` outside a request) and ``JsonFormatter`` writes one JSON object
per line. Celery tasks published during a request carry the id in a ``request_id`` message
header and run with it set (``before_task_publish`` / ``task_prerun`` handlers, connected when
this module is imported, which the Celery app does).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from celery.signals import before_task_publish, task_postrun, task_prerun

from twins.request_context import request_id  # the ledger reads the same variable

HEADER = "X-Request-ID"
VALID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def incoming_id(value: str | None) -> str:
    """The caller's id when it is plausible, else a new one (32 hex characters)."""
    return value if value and VALID.fullmatch(value) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets ``request_id`` for the request and echoes it in ``X-Request-ID``; sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        token = request_id.set(self._assign(request))
        try:
            response = self.get_response(request)
            response[HEADER] = request_id.get()
            return response
        finally:
            request_id.reset(token)

    @staticmethod
    def _assign(request) -> str:
        # Also on the request: Django logs 4xx/5xx responses after the middleware chain has
        # returned, when the context variable is already reset.
        request.request_id = incoming_id(request.headers.get(HEADER))
        return request.request_id

    async def _acall(self, request):
        token = request_id.set(self._assign(request))
        try:
            response = await self.get_response(request)
            response[HEADER] = request_id.get()
            return response
        finally:
            request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (never filters anything out): the current one, or
    that of the ``request`` Django attaches to its response log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            from_request = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = from_request or request_id.get()
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request"}  # Django's request object: its id is already there


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``request_id``, ``exc`` when there is an exception, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        return json.dumps(doc, default=str)


# --- Celery: the id travels with the task ---------------------------------------------------------
@before_task_publish.connect(weak=False)
def _stamp_task(headers: dict | None = None, **_kwargs) -> None:
    current = request_id.get()
    if headers is not None and current != "-":
        headers.setdefault("request_id", current)


_task_tokens: dict[str, object] = {}


@task_prerun.connect(weak=False)
def _enter_task(task_id: str | None = None, task=None, **_kwargs) -> None:
    if task is None:
        return
    # A worker exposes message headers as request attributes; apply() keeps them in .headers.
    carried = (getattr(task.request, "request_id", None)
               or (getattr(task.request, "headers", None) or {}).get("request_id"))
    if carried and task_id:
        _task_tokens[task_id] = request_id.set(incoming_id(carried))


@task_postrun.connect(weak=False)
def _leave_task(task_id: str | None = None, **_kwargs) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        request_id.reset(token)
