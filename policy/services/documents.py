"""Policy documents: publish a new version, find the policy in force, raise the high-water mark.

A document is trusted only as ``policy.trust.assess`` says; this module adds the database:
the newest version of the twin, and the high-water mark, raised (never lowered) the first time
a version is found trusted, with an audit entry ``policy.accept``.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from policy.models import PolicyDocument, PolicyHighWater
from policy.rules import PolicyInvalid, parse_body
from policy.trust import ActivePolicy, assess, body_sha256
from twins.ledger import record_change

RAISE_MARK = """
INSERT INTO policy_policyhighwater (twin_id, version, body_sha256, accepted_at)
VALUES (%s, %s, %s, %s)
ON CONFLICT (twin_id) DO UPDATE
    SET version = EXCLUDED.version, body_sha256 = EXCLUDED.body_sha256,
        accepted_at = EXCLUDED.accepted_at
    WHERE policy_policyhighwater.version < EXCLUDED.version
RETURNING id
"""


def _document_json(document: PolicyDocument) -> dict:
    return {"id": document.pk, "twin": document.twin.slug, "version": document.version,
            "key_id": document.key_id, "signed": bool(document.signature),
            "body_sha256": body_sha256(document.body)}


def accept(twin, policy: ActivePolicy) -> bool:
    """Raise the twin's high-water mark to a trusted ``policy``'s version; True if it rose.

    One atomic ``INSERT ... ON CONFLICT DO UPDATE ... WHERE version < new``: concurrent
    callers cannot lower the mark or accept one version twice.
    """
    if not policy.trusted or policy.version is None:
        return False
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(RAISE_MARK, [twin.pk, policy.version, policy.body_sha256,
                                        timezone.now()])
            raised = cursor.fetchone() is not None
        if raised:  # policy.v1, like policy.created, plus the verdict
            document = PolicyDocument.objects.select_related("twin").get(pk=policy.document_id)
            after = _document_json(document) | {"accepted": True, "trusted": True,
                                                "reason": policy.reason}
            record_change(actor="policy", action="policy.accept", resource_type="policy",
                          resource_id=policy.document_id, operation="updated", twin=twin,
                          after=after, reason="first trusted use of this version")
    return raised


def active_policy(twin) -> ActivePolicy:
    """The policy in force for ``twin`` now (newest version, verified every time)."""
    document = PolicyDocument.objects.filter(twin=twin).order_by("-version").first()
    mark = PolicyHighWater.objects.filter(twin=twin).first()
    policy = assess(twin.slug, document, mark)
    if policy.trusted and (mark is None or mark.version < policy.version):
        accept(twin, policy)
    return policy


def next_version(twin) -> int:
    """One above both the newest stored version and the high-water mark."""
    newest = PolicyDocument.objects.filter(twin=twin).order_by("-version").first()
    mark = PolicyHighWater.objects.filter(twin=twin).first()
    return max(newest.version if newest else 0, mark.version if mark else 0) + 1


def publish_policy(*, twin, body: str, signature: str = "", key_id: str = "", actor=None,
                   request=None) -> tuple[PolicyDocument, ActivePolicy]:
    """Store ``body`` (exact text) as the twin's next version; audited; returns its verdict.

    The body's ``version`` must be the next version (``next_version``) and its ``twin`` this
    twin: both are inside the signed bytes. A document that fails verification is stored
    anyway (the twin then runs without automation, visibly) so that the admin's history is
    complete. Raises PolicyInvalid for a body that is not a JSON object with those two fields.
    """
    parsed = parse_body(body)
    with transaction.atomic():
        type(twin).objects.select_for_update(no_key=True).get(pk=twin.pk)  # one at a time
        version = next_version(twin)
        if parsed.get("twin") != twin.slug or parsed.get("version") != version:
            raise PolicyInvalid(f"body must name twin {twin.slug!r} and version {version}")
        document = PolicyDocument.objects.create(
            twin=twin, version=version, body=body, signature=signature.strip(),
            key_id=key_id.strip(), created_by=actor if getattr(actor, "pk", None) else None)
        record_change(actor=actor or "policy", action="policy.publish", resource_type="policy",
                      resource_id=document.pk, operation="created", twin=twin,
                      after=_document_json(document), request=request)
    return document, active_policy(twin)
