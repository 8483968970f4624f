"""Telemetry storage at scale (see telemetry/storage.py and telemetry/rollups.py).

1. Samples and event envelopes lose their per-row FK check at commit and their asset_id
   index, which (asset, metric, ts) and (asset, ts) make redundant: ingest speed.
2. Rollups (1 minute, 1 hour) and their dirty-range table; with TIMESCALEDB=1 the samples
   table becomes a compressed hypertable with retention, and the rollups continuous aggregates.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def forwards(apps, schema_editor):
    from telemetry.storage import create_storage

    with schema_editor.connection.cursor() as cursor:
        create_storage(cursor, timescale=settings.TIMESCALEDB)


def backwards(apps, schema_editor):
    from telemetry.storage import drop_storage

    with schema_editor.connection.cursor() as cursor:
        drop_storage(cursor)


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0003_default_detector_configs"),
        ("twins", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="telemetryevent",
            name="asset",
            field=models.ForeignKey(
                db_constraint=False, db_index=False,
                on_delete=django.db.models.deletion.CASCADE, related_name="events",
                to="twins.asset",
            ),
        ),
        migrations.AlterField(
            model_name="telemetrysample",
            name="asset",
            field=models.ForeignKey(
                db_constraint=False, db_index=False,
                on_delete=django.db.models.deletion.CASCADE, related_name="samples",
                to="twins.asset",
            ),
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
