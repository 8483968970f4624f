"""Two indexes fewer for every audited change (issue 16).

``policy_auditentry.hash`` keeps its unique index, now as the constraint ``audit_hash_unique``:
``unique=True`` on a CharField also made a ``varchar_pattern_ops`` index for LIKE queries, which
nothing runs. ``aiw_changeevent.twin_id`` loses its single-column index: ``change_twin_id``
(twin_id, id) starts with the same column and serves the foreign key's lookups. Each append
wrote both; the feed's and the chain's reads use the remaining indexes unchanged.

Written by hand so that a large table is not rebuilt: Django's own operations would drop and
re-validate the foreign key and build the unique index anew, under locks that stop every
audited write meanwhile. Here the unique constraint is only renamed (found by its column, not
by its generated name) and the two indexes are dropped CONCURRENTLY (so not in a transaction).
"""

from django.db import migrations, models

RENAME_HASH_CONSTRAINT = """
DO $$
DECLARE found text;
BEGIN
    SELECT c.conname INTO found FROM pg_constraint c
     WHERE c.conrelid = 'policy_auditentry'::regclass AND c.contype = 'u'
       AND c.conkey = ARRAY[(SELECT attnum FROM pg_attribute
                              WHERE attrelid = 'policy_auditentry'::regclass
                                AND attname = 'hash')]::smallint[];
    IF found IS NOT NULL AND found <> '{to}' THEN
        EXECUTE format('ALTER TABLE policy_auditentry RENAME CONSTRAINT %I TO {to}', found);
    END IF;
END $$;
"""


class Migration(migrations.Migration):

    atomic = False
    dependencies = [
        ("twins", "0004_builtin_asset_types"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditentry",
                    name="hash",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="changeevent",
                    name="twin",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=models.deletion.SET_NULL,
                                            related_name="+", to="twins.twin"),
                ),
                migrations.AddConstraint(
                    model_name="auditentry",
                    constraint=models.UniqueConstraint(fields=("hash",),
                                                       name="audit_hash_unique"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    RENAME_HASH_CONSTRAINT.format(to="audit_hash_unique"),
                    reverse_sql=RENAME_HASH_CONSTRAINT.format(to="policy_auditentry_hash_key"),
                ),
                migrations.RunSQL(
                    'DROP INDEX CONCURRENTLY IF EXISTS "policy_auditentry_hash_ba9d0cd8_like"',
                    reverse_sql='CREATE INDEX CONCURRENTLY IF NOT EXISTS '
                                '"policy_auditentry_hash_ba9d0cd8_like" ON "policy_auditentry" '
                                '("hash" varchar_pattern_ops)',
                ),
                migrations.RunSQL(
                    'DROP INDEX CONCURRENTLY IF EXISTS "aiw_changeevent_twin_id_83353e67"',
                    reverse_sql='CREATE INDEX CONCURRENTLY IF NOT EXISTS '
                                '"aiw_changeevent_twin_id_83353e67" ON "aiw_changeevent" '
                                '("twin_id")',
                ),
            ],
        ),
    ]
