"""A real local HTTP receiver for webhook tests: a ``ThreadingHTTPServer`` on a free port that
records each request and checks its signature the way a subscriber would (its own HMAC code,
not OpsTwin's), answering with the statuses it is told to."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict  # names in lower case
    body: bytes
    signature_ok: bool
    at: float  # time.monotonic() on arrival

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers ``answers`` in order (then 200); ``requests`` in arrival order; a 3xx answer
    carries ``Location: <location>``."""

    secret: str
    answers: list[int] = field(default_factory=list)
    location: str = ""
    tls: ssl.SSLContext | None = None  # a server context: answer HTTPS instead of HTTP
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}/hooks/opstwin"

    def check(self, headers: dict, body: bytes) -> bool:
        """A subscriber's check: sha256=HMAC(secret, "<timestamp>." + body), fresh timestamp."""
        timestamp = headers.get("x-opstwin-timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest("sha256=" + mac.hexdigest(),
                                   headers.get("x-opstwin-signature", ""))

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(Received(headers, body, receiver.check(headers, body),
                                                  time.monotonic()))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400 and receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
