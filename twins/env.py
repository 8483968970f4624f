"""Settings read from the environment, validated at start-up.

Every reader fails loudly (``ImproperlyConfigured``) on a malformed value instead of silently
falling back, in the manner of Healthchecks' ``envbool``/``envint`` helpers. Secrets may also be
given as ``NAME_FILE`` pointing at a file (Docker secrets).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str | None:
    """Return ``$NAME``, or the contents of the file named by ``$NAME_FILE``, or ``default``."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_bool(name: str, default: bool) -> bool:
    """Parse ``$NAME`` as a boolean (1/0, true/false, yes/no, on/off); raise on anything else."""
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Parse ``$NAME`` as an integer, optionally not below ``minimum``; raise on bad values."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    """Parse ``$NAME`` as a float; raise on bad values."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc


def env_url(name: str, schemes: tuple[str, ...]) -> str | None:
    """Return ``$NAME`` if it is a URL with one of ``schemes`` and a host, else raise.

    Returns ``None`` when the variable is unset, which selects the embedded default.
    """
    raw = env_str(name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(f"{name}={raw!r}: scheme must be one of {', '.join(schemes)}")
    if not parts.hostname and "host=" not in parts.query:
        raise ImproperlyConfigured(f"{name}={raw!r} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} has a bad port") from exc
    return raw


def database_url_of(settings_dict: dict, *, host: str | None = None,
                    port: int | None = None) -> str:
    """The ``postgres://`` URL of a Django ``DATABASES`` entry, for a child process.

    Handles both a TCP server (``HOST``/``PORT``) and a Unix-socket server such as the
    embedded PostgreSQL, whose socket folder sits in ``OPTIONS["host"]`` and is passed on as
    ``?host=/path`` (libpq's form, which ``env_url`` accepts). ``host``/``port`` override the
    entry's TCP address (e.g. to go through a proxy). The result always names the database
    the caller is connected to, e.g. the test database pytest-django created.
    """
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    name = quote(settings_dict["NAME"], safe="")
    socket_dir = (settings_dict.get("OPTIONS") or {}).get("host") or ""
    tcp_host = host or settings_dict.get("HOST") or ""
    if not host and (socket_dir.startswith("/") or tcp_host.startswith("/")):
        folder = socket_dir if socket_dir.startswith("/") else tcp_host
        port_part = f"&port={settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{auth}/{name}?host={quote(folder)}{port_part}"
    address = f"{tcp_host or '127.0.0.1'}:{port or settings_dict.get('PORT') or 5432}"
    return f"postgres://{auth}{address}/{name}"
