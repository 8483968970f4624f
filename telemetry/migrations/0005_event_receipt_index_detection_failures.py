"""Index events by receipt time (the last reading by receipt: policy.state) and record detection
failures per asset (telemetry.detection.record_failure).

The index is built CONCURRENTLY, so ingest keeps writing while it builds on a large table;
hence the migration is not atomic.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("telemetry", "0004_telemetry_storage"),
        ("twins", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="detectionstate",
            name="failures",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="detectionstate",
            name="last_error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="detectionstate",
            name="last_error_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexConcurrently(
            model_name="telemetryevent",
            index=models.Index(fields=["asset", "received_at", "ts"],
                               name="tevent_asset_received"),
        ),
    ]
