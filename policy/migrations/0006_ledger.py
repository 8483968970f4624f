"""AuditEntry and AuditAnchor now belong to twins (twins 0002); state only, the tables stay."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('twins', '0002_ledger'),
        ('policy', '0005_audit_truncate_hmac'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='AuditAnchor',
                ),
                migrations.DeleteModel(
                    name='AuditEntry',
                ),
            ],
            database_operations=[],
        ),
    ]
