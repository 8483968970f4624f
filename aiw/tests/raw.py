"""curl-like raw HTTP helpers for the live-server tests (http.client and plain sockets)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
from urllib.parse import urlsplit


def connect(base: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def get(base: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One GET: (status, headers with lower-case names, body)."""
    conn = connect(base)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def open_stream(base: str, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """Start a GET whose body is read incrementally (an SSE stream)."""
    conn = connect(base)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def read_frames(response, count: int, *, events_only: bool = False,
                within: float = 20.0) -> list[dict]:
    """Parse ``count`` SSE frames (blank-line terminated) from a live response.

    A frame is a dict of its fields (``id``, ``event``, ``data``, ``retry``); a comment-only
    frame is ``{"comment": text}``. ``events_only`` skips frames without ``data``. Raises
    TimeoutError when the frames have not all come ``within`` seconds (heartbeats would
    otherwise keep a wait for a missing event going forever).
    """
    frames: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + within
    while len(frames) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(frames)} of {count} frames arrived: {frames[-3:]}")
        line = response.readline()
        if not line:
            raise EOFError(f"stream ended after {len(frames)} frames")
        text = line.decode().rstrip("\n")
        if text == "":
            if current and (not events_only or "data" in current):
                frames.append(current)
            current = {}
        elif text.startswith(":"):
            current.setdefault("comment", text[1:].strip())
        else:
            name, _, value = text.partition(":")
            current[name] = value.removeprefix(" ")
    return frames


def parse_sse(raw: bytes) -> list[dict]:
    """Every complete frame in a raw (de-chunked) SSE body."""
    frames = []
    for block in raw.decode().split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "data" in fields:
            frames.append(fields | {"json": json.loads(fields["data"])})
    return frames


def dechunk(raw: bytes) -> bytes:
    """The body of a raw ``Transfer-Encoding: chunked`` HTTP response (headers included)."""
    _head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    return body


def small_buffer_socket(base: str) -> socket.socket:
    """A socket connected to ``base`` with a tiny (4 KiB) receive buffer."""
    parts = urlsplit(base)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    return sock


def stalled_socket(base: str, path: str, headers: dict) -> socket.socket:
    """A socket that sends a GET and then reads nothing (tiny receive buffer): a slow client."""
    parts = urlsplit(base)
    sock = small_buffer_socket(base)
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.hostname}",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(lines).encode())
    return sock


def read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    """Read until ``marker`` has arrived; returns everything read."""
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(1024)
        if not chunk:
            raise EOFError("closed before the marker arrived")
        data += chunk
    return data


def read_until_closed(sock: socket.socket, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def stalled_websocket(base: str, path: str, headers: dict) -> socket.socket:
    """A socket that opens a WebSocket (RFC 6455 handshake) and then reads nothing."""
    key = base64.b64encode(os.urandom(16)).decode()
    return stalled_socket(base, path, headers | {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13"})


def websocket_messages(raw: bytes) -> tuple[list[str], int | None]:
    """(text messages, close code or None) of the server's frames after the handshake in
    ``raw`` (server frames are unmasked; RFC 6455 section 5.2). A truncated last frame is
    ignored."""
    _head, _, rest = raw.partition(b"\r\n\r\n")
    messages, code = [], None
    while len(rest) >= 2:
        opcode, size, start = rest[0] & 0x0F, rest[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(rest[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(rest[2:10], "big"), 10
        if len(rest) < start + size:
            break
        payload, rest = rest[start:start + size], rest[start + size:]
        if opcode == 0x1:
            messages.append(payload.decode())
        elif opcode == 0x8 and len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
    return messages, code
