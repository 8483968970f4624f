"""A small Python client for the AIW protocol: what an agent needs, starting from one URL.

    client = AIWClient("http://127.0.0.1:8000", token="aiw_...")
    client.manifest()                     # discovery (cached by ETag)
    for event in client.changes(since):   # /diff pages until caught up
        ...
    for event in client.follow(since):    # /subscribe (SSE), resumes with Last-Event-ID
        ...

Every event is a change-event.v1 dict; its ``cursor`` resumes right after it. A cursor the
server no longer knows raises :class:`CursorGone`; resynchronise from :meth:`snapshot`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from httpx_sse import connect_sse

MANIFEST_PATH = "/.well-known/aiw-manifest.json"
STREAM_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)


class AIWError(Exception):
    """The server answered with a problem (``problem`` holds the RFC 9457 body)."""

    def __init__(self, problem: dict) -> None:
        super().__init__(f"{problem.get('status')} {problem.get('title')}: "
                         f"{problem.get('detail', '')}")
        self.problem = problem


class CursorGone(AIWError):
    """410: the cursor is unknown or expired; take a snapshot and follow its cursor."""


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"status": response.status_code, "title": response.reason_phrase}
    raise (CursorGone if response.status_code == 410 else AIWError)(body)


class AIWClient:
    """HTTP client for one OpsTwin server (``base_url``), as the agent behind ``token``."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                         timeout=timeout)
        self._manifest: dict | None = None
        self._etag: str | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def manifest(self) -> dict:
        """The manifest, revalidated with ``If-None-Match`` (a 304 reuses the cached one)."""
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = self.http.get(MANIFEST_PATH, headers=headers)
        if response.status_code == 304 and self._manifest is not None:
            return self._manifest
        _raise_for_problem(response)
        self._manifest, self._etag = response.json(), response.headers.get("ETag")
        return self._manifest

    def endpoint(self, name: str) -> str:
        """The URL of endpoint ``name`` from the manifest (e.g. ``"diff"``)."""
        return (self._manifest or self.manifest())["endpoints"][name]

    def diff(self, since: str = "0", *, limit: int | None = None, types: str | None = None,
             twin: str | None = None) -> dict:
        """One /diff page: ``{"events", "next_cursor", "has_more"}``. Raises CursorGone."""
        params = {k: v for k, v in {"since": since, "limit": limit, "types": types,
                                    "twin": twin}.items() if v is not None}
        response = self.http.get(self.endpoint("diff"), params=params)
        _raise_for_problem(response)
        return response.json()

    def changes(self, since: str = "0", **filters) -> Iterator[dict]:
        """Every event after ``since`` now available, page by page (then stops)."""
        while True:
            page = self.diff(since, **filters)
            yield from page["events"]
            since = page["next_cursor"]
            if not page["has_more"]:
                return

    def snapshot(self) -> dict:
        """Current state and its ``cursor`` (follow /diff or /subscribe from it)."""
        response = self.http.get(self.endpoint("snapshot"))
        _raise_for_problem(response)
        return response.json()

    def follow(self, since: str = "0", *, types: str | None = None, twin: str | None = None,
               retry_seconds: float = 1.0) -> Iterator[dict]:
        """Follow /subscribe forever, reconnecting with ``Last-Event-ID`` after a dropped
        connection or an ``aiw.reconnect``; yields change events. Raises CursorGone, or
        AIWError for an ``aiw.error`` or a refused connection."""
        cursor = since
        while True:
            try:
                for event in self._stream(cursor, types=types, twin=twin):
                    cursor = event["cursor"]
                    yield event
            except STREAM_ERRORS:
                pass
            time.sleep(retry_seconds)

    def _stream(self, cursor: str, *, types: str | None, twin: str | None) -> Iterator[dict]:
        params = {k: v for k, v in {"types": types, "twin": twin}.items() if v}
        headers = {"Last-Event-ID": cursor, "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)
        with connect_sse(self.http, "GET", self.endpoint("subscribe"), params=params,
                         headers=headers, timeout=timeout) as source:
            _raise_for_problem(source.response)
            for sse in source.iter_sse():
                if not sse.data:  # a retry hint (SSE dispatches no event without data)
                    continue
                message = json.loads(sse.data)
                if sse.event == "aiw.reconnect":
                    return
                if sse.event == "aiw.error":
                    raise AIWError(message["problem"])
                yield message


class CursorFile:
    """A cursor persisted in a file, replaced atomically (a crash never leaves half a cursor)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, default: str = "0") -> str:
        """The stored cursor, or ``default`` when there is none yet."""
        try:
            return self.path.read_text().strip() or default
        except FileNotFoundError:
            return default

    def save(self, cursor: str) -> None:
        """Store ``cursor`` (write to a temporary file, then rename over the old one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cursor-")
        with os.fdopen(fd, "w") as handle:
            handle.write(cursor)
        os.replace(tmp, self.path)
