"""PostgreSQL refuses UPDATE and DELETE on the audit chain: it is append-only."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION opstwin_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'policy_auditentry is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON policy_auditentry
    FOR EACH ROW EXECUTE FUNCTION opstwin_audit_append_only();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS audit_append_only ON policy_auditentry;
DROP FUNCTION IF EXISTS opstwin_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("policy", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
