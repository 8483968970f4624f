"""Streaming detector state per (asset, metric), and the measured generic default.

1. ``DetectorStreamState``: what a streaming detector carries between detection runs
   (``telemetry.streaming``), so anomalies do not depend on how telemetry was batched.
2. Kinds still on the seed's rolling z-score with default parameters (every kind but the pump)
   move to ``smoothed_z`` (``telemetry.detectors.streaming.SmoothedZScore``): on the NAB
   development split it scores 53.1 (standard profile) where the seed's z-score scores 12.6
   with the same onset filter and -185.6 with one alert per flagged run
   (``benchmarks/nab_eval.py``). A kind an admin changed is left alone.
"""

import django.db.models.deletion
from django.db import migrations, models

OLD, NEW = ("zscore", {}), ("smoothed_z", {})


def forward(apps, schema_editor):
    configs = apps.get_model("telemetry", "DetectorConfig").objects
    configs.filter(detector=OLD[0], params=OLD[1]).update(detector=NEW[0], params=NEW[1])
    configs.get_or_create(asset_kind="generic",
                          defaults={"detector": NEW[0], "params": NEW[1], "calibration_rows": 400})


def backward(apps, schema_editor):
    configs = apps.get_model("telemetry", "DetectorConfig").objects
    configs.filter(detector=NEW[0], params=NEW[1]).update(detector=OLD[0], params=OLD[1])


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0005_event_receipt_index_detection_failures"),
        ("twins", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="DetectorStreamState",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("metric", models.CharField(blank=True, max_length=128)),
                ("detector", models.CharField(max_length=32)),
                ("params", models.JSONField(default=dict)),
                ("state", models.JSONField(default=dict)),
                ("rows_seen", models.BigIntegerField(default=0)),
                ("interval_seconds", models.FloatField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("asset", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                            related_name="stream_states", to="twins.asset")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("asset", "metric"),
                                                        name="stream_state_asset_metric")],
            },
        ),
        migrations.RunPython(forward, backward),
    ]
