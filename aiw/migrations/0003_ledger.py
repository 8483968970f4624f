"""ChangeEvent now belongs to twins (twins 0002); state only, the table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('twins', '0002_ledger'),
        ('aiw', '0002_tokens_idempotency_retention'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='ChangeEvent',
                ),
            ],
            database_operations=[],
        ),
    ]
