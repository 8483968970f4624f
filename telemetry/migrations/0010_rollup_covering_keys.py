"""Rollup primary keys carry every rollup column (plain PostgreSQL; see
``telemetry.storage.COVERING_KEY_DDL``). TimescaleDB's continuous aggregates are left alone."""

from django.db import migrations


def _apply(schema_editor, statements: list[str]) -> None:
    from telemetry.storage import uses_continuous_aggregates

    uses_continuous_aggregates.cache_clear()
    if uses_continuous_aggregates():
        return
    with schema_editor.connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def forwards(apps, schema_editor):
    from telemetry.storage import COVERING_KEY_DDL

    _apply(schema_editor, COVERING_KEY_DDL)


def backwards(apps, schema_editor):
    from telemetry.storage import PLAIN_KEY_DDL

    _apply(schema_editor, PLAIN_KEY_DDL)


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0009_acknowledge_permission"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
