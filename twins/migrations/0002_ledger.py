"""The ledger moves to twins (issue 11): AuditEntry and AuditAnchor from policy, ChangeEvent
from aiw. State only: the tables keep their names and rows (``Meta.db_table``), and their
triggers (policy migrations 0002, 0004, 0005) stay on them."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('aiw', '0002_tokens_idempotency_retention'),
        ('policy', '0005_audit_truncate_hmac'),
        ('twins', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditAnchor',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('seq', models.BigIntegerField()),
                        ('hash', models.CharField(max_length=64)),
                        ('at', models.DateTimeField()),
                    ],
                    options={
                        'db_table': 'policy_auditanchor',
                        'ordering': ['-seq', '-at'],
                    },
                ),
                migrations.CreateModel(
                    name='AuditEntry',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('seq', models.BigIntegerField(unique=True)),
                        ('at', models.DateTimeField()),
                        ('actor', models.CharField(max_length=150)),
                        ('role', models.CharField(blank=True, max_length=32)),
                        ('action', models.CharField(max_length=64)),
                        ('resource_type', models.CharField(max_length=32)),
                        ('resource_id', models.CharField(max_length=64)),
                        ('twin_slug', models.CharField(blank=True, max_length=64)),
                        ('before', models.JSONField(blank=True, null=True)),
                        ('after', models.JSONField(blank=True, null=True)),
                        ('reason', models.TextField(blank=True)),
                        ('request_id', models.CharField(blank=True, max_length=64)),
                        ('client_address', models.CharField(blank=True, max_length=64)),
                        ('prev_hash', models.CharField(max_length=64)),
                        ('hash', models.CharField(max_length=64, unique=True)),
                        ('key_id', models.CharField(blank=True, default='', max_length=32)),
                    ],
                    options={
                        'verbose_name_plural': 'audit entries',
                        'db_table': 'policy_auditentry',
                        'ordering': ['seq'],
                    },
                ),
                migrations.CreateModel(
                    name='ChangeEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('type', models.CharField(max_length=64)),
                        ('resource_type', models.CharField(max_length=32)),
                        ('resource_id', models.CharField(max_length=64)),
                        ('operation', models.CharField(max_length=16)),
                        ('actor', models.CharField(max_length=150)),
                        ('data', models.JSONField()),
                        ('created_at', models.DateTimeField()),
                        ('twin', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='twins.twin')),
                    ],
                    options={
                        'db_table': 'aiw_changeevent',
                        'ordering': ['id'],
                        'indexes': [models.Index(fields=['twin', 'id'], name='change_twin_id')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
