"""Two indexes fewer for every audited change (issue 16).

``policy_auditentry.hash`` keeps its unique index, now as the constraint ``audit_hash_unique``:
``unique=True`` on a CharField also made a ``varchar_pattern_ops`` index for LIKE queries, which
nothing runs. ``aiw_changeevent.twin_id`` loses its single-column index: ``change_twin_id``
(twin_id, id) starts with the same column and serves the foreign key's lookups. Each append
wrote both; the feed's and the chain's reads use the remaining indexes unchanged.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('twins', '0004_builtin_asset_types'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditentry',
            name='hash',
            field=models.CharField(max_length=64),
        ),
        migrations.AlterField(
            model_name='changeevent',
            name='twin',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='twins.twin'),
        ),
        migrations.AddConstraint(
            model_name='auditentry',
            constraint=models.UniqueConstraint(fields=('hash',), name='audit_hash_unique'),
        ),
    ]
