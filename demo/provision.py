"""Creating the SKAB twin, its assets and one demo user per role."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from demo.skab import METRICS, asset_slug
from twins.api.serializers import AssetSerializer, TwinSerializer
from twins.choices import AssetKind, Role
from twins.ledger import record_change
from twins.models import Asset, Twin

SKAB_TWIN = "skab"


def create_skab_twin(file_names: list[str], *, reset: bool) -> Twin:
    """The SKAB testbed twin with one pump asset per replayed file (``valve1/0.csv`` → valve1-0).

    ``reset`` deletes an existing SKAB twin first (with its telemetry, anomalies and proposals;
    the audit chain keeps its entries). Each creation is audited and published on the feed.
    """
    with transaction.atomic():
        if reset:
            Twin.objects.filter(slug=SKAB_TWIN).delete()
        twin, created = Twin.objects.get_or_create(
            slug=SKAB_TWIN,
            defaults={"name": "SKAB water-pump testbed",
                      "description": "Skoltech Anomaly Benchmark: a water-circulation loop "
                                     "around a motor-driven pump, replayed from CSV."},
        )
        if created:
            record_change(actor="demo", action="twin.create", resource_type="twin",
                          resource_id=twin.pk, operation="created", twin=twin,
                          after=dict(TwinSerializer(twin).data))
        for name in file_names:
            asset, made = Asset.objects.get_or_create(
                twin=twin, slug=asset_slug(name),
                defaults={"name": f"Pump ({name})", "kind": AssetKind.PUMP,
                          "metadata": {"file": name, "source": "SKAB v0.9"},
                          "metrics": [{"name": m, "unit": u} for m, u in METRICS]},
            )
            if made:
                record_change(actor="demo", action="asset.create", resource_type="asset",
                              resource_id=asset.pk, operation="created", twin=twin,
                              after=dict(AssetSerializer(asset).data))
    return twin


def create_demo_users(password: str | None = None) -> dict[str, str]:
    """One user per role (username = role name); returns {username: password}.

    Passwords are random on every call unless ``password`` is given, so a demo never runs
    with a known default credential. The admin user is staff (Django admin access).
    """
    users = get_user_model().objects
    credentials = {}
    for role in Role:
        user, _ = users.get_or_create(username=str(role))
        secret = password or secrets.token_urlsafe(9)
        user.set_password(secret)
        user.is_staff = role == Role.ADMIN
        user.save()
        user.groups.set([Group.objects.get(name=str(role))])
        credentials[str(role)] = secret
    return credentials
