"""Whether a twin's current policy document may be trusted, and the rules that then apply.

Trusted means all of: the newest stored document parses as policy.v1, names this twin and its
own stored version, carries a valid Ed25519 signature by a pinned key (``policy.signing``), and
is not below the highest version ever accepted for the twin (nor that version with another
body). Anything else, including no document at all, is untrusted: the rules become the
defaults tightened by whatever the document forbids (``policy.rules.tighten``) and automation
is denied. The check runs on every decision and every execution; nothing is cached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from policy.rules import (
    SCHEMA,
    PolicyInvalid,
    PolicyRules,
    default_rules,
    parse_body,
    rules_from_body,
    tighten,
)
from policy.signing import verify


@dataclass(frozen=True)
class ActivePolicy:
    """The policy in force for one twin at one moment."""

    trusted: bool
    reason: str
    rules: PolicyRules
    version: int | None = None
    document_id: int | None = None
    key_id: str = ""
    body_sha256: str = ""

    def summary(self) -> dict:
        """JSON for the decision trace: version, trusted, why."""
        return {"version": self.version, "trusted": self.trusted, "reason": self.reason,
                "key_id": self.key_id}


def body_sha256(body: str) -> str:
    """SHA-256 hex of the exact stored body text (UTF-8)."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _problems(twin_slug: str, document, body: dict, mark, keys) -> list[str]:
    problems = []
    if body.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}")
    if body.get("twin") != twin_slug:
        problems.append(f"body is for twin {body.get('twin')!r}, stored for {twin_slug!r}")
    if body.get("version") != document.version:
        problems.append(f"body says version {body.get('version')!r}, stored as "
                        f"v{document.version}")
    signature = verify(document.body, document.signature, document.key_id, keys)
    if not signature.ok:
        problems.append(signature.detail)
    if mark is not None and document.version < mark.version:
        problems.append(f"rollback: v{document.version} is below the accepted v{mark.version}")
    elif mark is not None and document.version == mark.version and \
            body_sha256(document.body) != mark.body_sha256:
        problems.append(f"v{document.version} differs from the body accepted as v{mark.version}")
    return problems


def assess(twin_slug: str, document, mark, keys: dict[str, str] | None = None) -> ActivePolicy:
    """The policy in force given the newest ``document`` (or None) and the high-water ``mark``.

    ``keys`` defaults to the pinned keys. Pure apart from reading settings; never raises.
    """
    if document is None:
        reason = "no policy document for this twin"
        if mark is not None:
            reason += f" (v{mark.version} was accepted: rollback)"
        return ActivePolicy(False, reason + ": automation denied", default_rules())
    ident = {"version": document.version, "document_id": document.pk, "key_id": document.key_id,
             "body_sha256": body_sha256(document.body)}
    try:
        body = parse_body(document.body)
    except PolicyInvalid as exc:
        return ActivePolicy(False, f"v{document.version}: {exc}: automation denied",
                            default_rules(), **ident)
    problems = _problems(twin_slug, document, body, mark, keys)
    if not problems:
        try:
            return ActivePolicy(True, f"v{document.version} verified ({document.key_id})",
                                rules_from_body(body), **ident)
        except PolicyInvalid as exc:
            problems = [f"invalid: {exc}"]
    return ActivePolicy(False, f"v{document.version}: {'; '.join(problems)}: automation denied",
                        tighten(default_rules(), body), **ident)
