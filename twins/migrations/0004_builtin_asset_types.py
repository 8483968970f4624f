"""One asset type per built-in kind (pump, valve, motor, generic), and every asset typed.

The types start with no metric list (each asset keeps its own) and no action list (every
action of the kind); admins refine them in Django admin. Reversing unsets the assets' type.
"""

from django.db import migrations

BUILTIN = {
    "pump": ("Pump", "A centrifugal pump with its loop valve and motor."),
    "valve": ("Valve", "A control valve."),
    "motor": ("Motor", "An electric motor driving a load."),
    "generic": ("Generic asset", "Any other asset: a data-driven what-if model of its metrics."),
}


def seed(apps, schema_editor):
    AssetType = apps.get_model("twins", "AssetType")
    Asset = apps.get_model("twins", "Asset")
    for kind, (name, description) in BUILTIN.items():
        asset_type, _ = AssetType.objects.get_or_create(
            slug=kind, defaults={"name": name, "description": description, "base_kind": kind})
        Asset.objects.filter(kind=kind, asset_type__isnull=True).update(asset_type=asset_type)


def unseed(apps, schema_editor):
    apps.get_model("twins", "Asset").objects.update(asset_type=None)


class Migration(migrations.Migration):
    dependencies = [("twins", "0003_twin_model")]
    operations = [migrations.RunPython(seed, unseed)]
