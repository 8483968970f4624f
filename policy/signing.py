"""Ed25519 signatures over policy documents, verified only against pinned public keys.

A signature is base64 (standard alphabet) of the 64-byte Ed25519 signature over the document's
exact stored text encoded as UTF-8 (RFC 8032; ``cryptography``'s Ed25519 implementation).
Public keys are base64 of the 32 raw key bytes, pinned in ``settings.POLICY_PUBLIC_KEYS``
(``{key_id: base64}``, from the environment). Private keys are PKCS#8 PEM files
(``manage.py policy_keygen``).

Development only: when no keys are configured and ``OPSTWIN_PRODUCTION`` is off, the settings
set ``POLICY_DEV_KEY_DIR`` and every ``<key_id>.pub`` file in it is pinned too; the demo writes
its key pair there. Production never reads that folder.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

DEV_KEY_ID = "demo-dev"


@dataclass(frozen=True)
class Verification:
    """Outcome of checking one signature: ``ok`` and a sentence saying why."""

    ok: bool
    detail: str


def pinned_keys() -> dict[str, str]:
    """``{key_id: base64 public key}`` trusted right now (settings, else the dev folder)."""
    keys = dict(getattr(settings, "POLICY_PUBLIC_KEYS", {}) or {})
    dev_dir = getattr(settings, "POLICY_DEV_KEY_DIR", None)
    if not keys and dev_dir and Path(dev_dir).is_dir():
        keys = {p.stem: p.read_text().strip() for p in sorted(Path(dev_dir).glob("*.pub"))}
    return keys


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """Base64 of the 32 raw public-key bytes of ``private_key``."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def generate_key_pair(directory: Path, key_id: str) -> tuple[Path, str]:
    """Write ``<key_id>.key`` (PKCS#8 PEM, mode 0600) and ``<key_id>.pub`` into ``directory``.

    Returns (private key path, base64 public key). Raises FileExistsError rather than
    overwriting a key.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{key_id}.key", directory / f"{key_id}.pub"
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_text(public_key_b64(key) + "\n")
    return private_path, public_key_b64(key)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key. Raises ValueError for another key type."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def sign(body: str, private_key: Ed25519PrivateKey) -> str:
    """Base64 Ed25519 signature over ``body.encode("utf-8")``."""
    return base64.b64encode(private_key.sign(body.encode("utf-8"))).decode()


def verify(
    body: str, signature: str, key_id: str, keys: dict[str, str] | None = None
) -> Verification:
    """Check ``signature`` over ``body`` with the pinned key ``key_id``; never raises.

    Fails (``ok`` False) for a missing signature, a key id that is not pinned, a malformed
    signature or key, and a signature that does not match the exact bytes.
    """
    keys = pinned_keys() if keys is None else keys
    if not signature:
        return Verification(False, "unsigned")
    if key_id not in keys:
        return Verification(False, f"key {key_id!r} is not pinned in POLICY_PUBLIC_KEYS")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(keys[key_id], validate=True))
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return Verification(False, "malformed signature or public key")
    try:
        public.verify(raw_signature, body.encode("utf-8"))
    except InvalidSignature:
        return Verification(False, f"signature does not match the stored body (key {key_id!r})")
    return Verification(True, f"signed with pinned key {key_id!r}")
