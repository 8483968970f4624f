"""PostgreSQL refuses to rewrite history: policy versions are never updated (a change is a new
version) and audit anchors are never updated or deleted. Policy versions may still be deleted
with their twin (cascade); deleting the newest version is caught as a rollback below the
high-water mark."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION opstwin_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER policydocument_no_update BEFORE UPDATE ON policy_policydocument
    FOR EACH ROW EXECUTE FUNCTION opstwin_append_only();
CREATE TRIGGER auditanchor_append_only BEFORE UPDATE OR DELETE ON policy_auditanchor
    FOR EACH ROW EXECUTE FUNCTION opstwin_append_only();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS policydocument_no_update ON policy_policydocument;
DROP TRIGGER IF EXISTS auditanchor_append_only ON policy_auditanchor;
DROP FUNCTION IF EXISTS opstwin_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("policy", "0003_policy_documents_approvals_anchors")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
