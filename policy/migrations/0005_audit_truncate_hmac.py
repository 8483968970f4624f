"""The audit chain becomes unforgeable without the server's key, and TRUNCATE is refused.

1. ``AuditEntry.key_id``: which scheme produced an entry's ``hash`` (empty = audit.v1, unkeyed
   SHA-256, every entry written before this migration; otherwise the id of the HMAC-SHA256 key,
   audit.v2; see ``twins.ledger``). Existing entries keep their hashes and keep verifying.
2. Statement-level ``BEFORE TRUNCATE`` triggers on the append-only tables (audit entries,
   audit anchors, policy documents): row triggers (migrations 0002, 0004) never fire on
   TRUNCATE, which is how a tail after the newest anchor was rewritten (issue 10, item 7).
   Exception: in Django's test databases (name ``test_*``) TRUNCATE stays allowed, because the
   test runner empties every table with one TRUNCATE between transactional tests; a session
   there sets ``opstwin.strict_truncate = on`` to get the production behaviour.
3. A non-empty chain is sealed: one ``audit.keyed`` entry, HMAC'd with the server's key, whose
   ``prev_hash`` is the tip's hash. It authenticates the whole unkeyed prefix under the key, so
   a chain whose tip is unkeyed is a forgery (``twins.audit_chain``).
"""

from django.db import migrations, models
from django.utils import timezone

TABLES = ("policy_auditentry", "policy_auditanchor", "policy_policydocument")

FORWARD = r"""
CREATE OR REPLACE FUNCTION opstwin_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF current_database() LIKE 'test\_%'
       AND coalesce(current_setting('opstwin.strict_truncate', true), '') <> 'on' THEN
        RETURN NULL;  -- Django's test runner flushes test databases with TRUNCATE
    END IF;
    RAISE EXCEPTION '% is append-only: TRUNCATE refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
""" + "".join(
    f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}\n"
    f"    FOR EACH STATEMENT EXECUTE FUNCTION opstwin_refuse_truncate();\n"
    for table in TABLES)
BACKWARD = "".join(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};\n"
                   for table in TABLES) + "DROP FUNCTION IF EXISTS opstwin_refuse_truncate();\n"


def seal_legacy_chain(apps, schema_editor):
    """Append one HMAC'd ``audit.keyed`` entry after an existing (unkeyed) tip; no-op if empty."""
    entry_model = apps.get_model("policy", "AuditEntry")
    tip = entry_model.objects.order_by("-seq").first()
    if tip is None:
        return
    from twins.ledger import AUDIT_LOCK_KEY, SYSTEM_ACTOR, seal

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
    tip = entry_model.objects.order_by("-seq").first()
    entry = entry_model(
        seq=tip.seq + 1, at=timezone.now(), actor=SYSTEM_ACTOR, role="system",
        action="audit.keyed", resource_type="audit", resource_id=str(tip.seq), twin_slug="",
        before=None, after={"scheme": "hmac-sha256", "sealed_through_seq": tip.seq},
        reason="audit chain switched to HMAC-SHA256 (migration 0005); this entry seals the "
               "SHA-256 entries before it", request_id="", client_address="",
        prev_hash=tip.hash,
    )
    seal(entry)
    entry.save(force_insert=True)


class Migration(migrations.Migration):
    dependencies = [("policy", "0004_append_only_documents_and_anchors")]
    operations = [
        migrations.AddField("auditentry", "key_id",
                            models.CharField(blank=True, default="", max_length=32)),
        migrations.RunSQL(FORWARD, BACKWARD),
        migrations.RunPython(seal_legacy_chain, migrations.RunPython.noop),
    ]
