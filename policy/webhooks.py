"""Signed webhook requests (notification.v1 bodies) and how a receiver checks them.

Scheme (README, "Notifications"): the body is canonical JSON (``twins.ledger.canonical_json``);
``X-OpsTwin-Timestamp`` is the send time in Unix seconds; ``X-OpsTwin-Signature`` is
``sha256=`` + hex HMAC-SHA256 (RFC 2104) keyed with the subscription's secret over
``<timestamp>.<body>``. Signing the timestamp with the body lets a receiver refuse a captured
request replayed later (older than its tolerance, 5 minutes in ``verify``), the scheme Stripe
and Slack use. Every retry is signed afresh with its own timestamp; ``X-OpsTwin-Delivery``
stays the same, so a receiver can drop duplicates.

Where a webhook may point (server-side request forgery): only ``http``/``https`` URLs whose
host resolves to public addresses only, unless the host is on
``settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS`` (``host_allowed``). Checked when a subscription
is saved (``refusal``) and again at every send (``target``), where the request then goes to the
very address that was checked: the URL's host is replaced by that IP address, the ``Host``
header and the TLS server name (httpx's ``sni_hostname`` request extension, so the certificate
is still verified against the name) keep the name. A DNS answer that changes between the check
and the connection (DNS rebinding) therefore cannot redirect the request. Redirects are never
followed. A proxy configured in the environment (httpx ``trust_env``) is handed the checked IP
address, not the name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

import httpx
from django.conf import settings

SIGNATURE_HEADER = "X-OpsTwin-Signature"
TIMESTAMP_HEADER = "X-OpsTwin-Timestamp"
DELIVERY_HEADER = "X-OpsTwin-Delivery"
EVENT_HEADER = "X-OpsTwin-Event"
TOLERANCE_SECONDS = 300


class WebhookFailed(Exception):
    """The receiver did not take the request: no connection, a timeout or a non-2xx answer
    (``status`` then holds the HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebhookRefused(WebhookFailed):
    """The URL may not be sent to: not http(s), no host, or a host resolving to a private,
    loopback, link-local, multicast or reserved address and not on the allow-list. Sending
    again will not help until the URL or the allow-list changes."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")


def allowed_hosts() -> list[str]:
    """``settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS`` (host patterns; empty: public addresses
    only)."""
    return list(getattr(settings, "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", None) or [])


def _as_network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(pattern.strip("[]"), strict=False)
    except ValueError:
        return None


def host_allowed(host: str, patterns: list[str] | None = None) -> bool:
    """Whether ``host`` (a name or an IP address as written in a URL) is on the allow-list.

    Patterns (case-insensitive): a host name (``hooks.internal``), a wildcard over subdomains
    (``*.corp.example``, not the bare domain), an IP address (``127.0.0.1``, ``::1``) or a
    network (``10.20.0.0/16``); the last two also allow any host resolving into them.
    """
    host = host.lower().rstrip(".").strip("[]")
    patterns = allowed_hosts() if patterns is None else patterns
    address = _address(host)
    for pattern in (p.strip().lower().rstrip(".") for p in patterns):
        network = _as_network(pattern)
        if network is not None:
            if address is not None and address in network:
                return True
        elif pattern and address is None and fnmatchcase(host, pattern):
            return True
    return False


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped or address


def _not_public(address: Address, patterns: list[str]) -> str | None:
    """``"a loopback address"`` (or private, link-local, ...) when ``address`` is refused."""
    if any((net := _as_network(p.strip().lower())) is not None and address in net
           for p in patterns):
        return None
    # IPv6 transition addresses carry an IPv4 address inside (6to4 2002::/16, Teredo): the
    # embedded one must be public too, or 2002:7f00:1:: would reach 127.0.0.1 over a relay.
    for embedded in (getattr(address, "sixtofour", None),
                     (getattr(address, "teredo", None) or (None, None))[1]):
        if embedded is not None and (why := _not_public(embedded, patterns)) is not None:
            return f"{why} inside an IPv6 transition address"
    for flag, what in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                       ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                       ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(address, flag):
            return f"a {what} address"
    return None if address.is_global else "not a public address"


def address_refusal(address: Address, patterns: list[str] | None = None) -> str | None:
    """Why a connection to ``address`` is refused (None: allowed), e.g. ``"127.0.0.1 is a
    loopback address"``: it must be globally routable unicast, or inside an allow-listed
    address or network (``patterns``, default the setting)."""
    address = _address(str(address))
    why = _not_public(address, allowed_hosts() if patterns is None else patterns)
    return None if why is None else f"{address} is {why}"


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``, TCP), in the resolver's
    order; raises ``socket.gaierror`` (an ``OSError``) if it does not resolve."""
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = _address(sockaddr[0])
        if address is not None and address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: ``url`` as configured, ``addresses`` the IP addresses
    the request may go to (all checked, in the resolver's order), ``host`` the name for the
    Host header and TLS."""

    url: httpx.URL
    host: str
    addresses: tuple[Address, ...]

    def pinned_url(self, address: Address) -> httpx.URL:
        """``url`` with its host replaced by ``address`` (path, port, query kept)."""
        return self.url.copy_with(host=str(address))


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WebhookRefused(f"refused: {url!r} is not a URL ({exc})") from exc
    if parsed.scheme not in SCHEMES:
        raise WebhookRefused(f"refused: the scheme must be http or https, not "
                             f"{parsed.scheme or 'no scheme'!r}")
    if not parsed.host:
        raise WebhookRefused("refused: the webhook URL has no host")
    return parsed


def _patterns_hint() -> str:
    return ("add it to NOTIFICATION_WEBHOOK_ALLOWED_HOSTS to allow it" if not allowed_hosts()
            else "it is not on NOTIFICATION_WEBHOOK_ALLOWED_HOSTS")


def target(url: str) -> Target:
    """Check ``url`` for sending now and pick the address to connect to.

    Raises WebhookRefused (scheme, host, or any resolved address refused by
    ``address_refusal`` for a host not matching the allow-list by name), or WebhookFailed if
    the host does not resolve (DNS may recover: the send is retried).
    """
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii").strip("[]")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise WebhookFailed(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise WebhookFailed(f"cannot resolve {host}: no address")
    literal = _address(host) is not None
    if literal or not host_allowed(host):
        for address in addresses:
            why = _not_public(address, allowed_hosts())
            if why is not None:
                said = (f"{address} is {why}" if literal
                        else f"{host} resolves to {address}, which is {why}")
                raise WebhookRefused(f"refused: {said}; {_patterns_hint()}")
    return Target(url=parsed, host=host, addresses=tuple(addresses))


def refusal(url: str) -> str | None:
    """Why a subscription may not use ``url`` (None: it may), for a form's error message:
    ``"Not allowed: <reason>"``.

    Same rules as ``target``; a host that does not resolve now is accepted (it is checked
    again at every send).
    """
    try:
        target(url)
    except WebhookRefused as exc:
        return "Not allowed: " + str(exc).removeprefix("refused: ")
    except WebhookFailed:
        return None
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<64 hex digits>``: HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``
    (UTF-8)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers, body: bytes, *, now: float | None = None,
           tolerance_s: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: True if ``headers`` (a mapping) carry a valid signature of
    ``body`` with a timestamp no further than ``tolerance_s`` seconds from ``now``."""
    try:
        timestamp = int(headers.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, ""))


def post(url: str, body: bytes, *, secret: str, delivery_id: int, event: str,
         timeout_s: float) -> int:
    """POST ``body`` (JSON) to ``url`` signed with ``secret``; returns the 2xx status.

    The destination is checked first (``target``) and the request goes to the checked address
    (module docstring). Redirects are not followed (a signed body goes only where it was
    addressed). Raises WebhookRefused for a destination that is not allowed, WebhookFailed on
    an unresolvable host, a connection error, a timeout or a status outside 200..299.
    """
    where = target(url)
    timestamp = int(time.time())
    netloc = where.url.netloc.decode("ascii").rpartition("@")[2]  # host[:port], no userinfo
    headers = {"Content-Type": "application/json", "User-Agent": "OpsTwin-Webhook/1",
               "Host": netloc,
               TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp,
                                                                              body),
               DELIVERY_HEADER: str(delivery_id), EVENT_HEADER: event}
    extensions = {"sni_hostname": where.host} if where.url.scheme == "https" else {}
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for n, address in enumerate(where.addresses, 1):
            try:
                response = client.post(where.pinned_url(address), content=body,
                                       headers=headers, extensions=extensions)
                break
            except httpx.ConnectError as exc:  # next checked address, as a browser would
                if n == len(where.addresses):
                    raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
    if 300 <= response.status_code < 400:
        raise WebhookFailed(f"HTTP {response.status_code} from the receiver (redirects are "
                            "not followed)", status=response.status_code)
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"HTTP {response.status_code} from the receiver",
                            status=response.status_code)
    return response.status_code
