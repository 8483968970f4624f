"""Asset types as data (issue 14): validation by field, metrics an asset inherits from its type,
and what ingest accepts because of them (undeclared metrics and out-of-range values go to dead
letters with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from telemetry.models import DeadLetter, TelemetryEvent
from twins import services
from twins.models import Asset, AssetType, AuditEntry, ReportedMetric
from twins.tests.twin_api import feed, ingest, problem, reading, send

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SUPPLY = "Supply temperature"


@pytest.fixture
def chiller_type(db) -> AssetType:
    asset_type = AssetType(slug="chiller", name="Chiller", base_kind="generic", metrics=[
        {"name": SUPPLY, "unit": "Cel", "min": -10, "max": 40, "cadence_seconds": 5},
        {"name": "Power", "unit": "kW", "min": 0}])
    services.save_asset_type(asset_type, actor="setup")
    return asset_type


@pytest.fixture
def chiller(plant, chiller_type) -> Asset:
    """An asset of the chiller type with no metric list of its own."""
    asset = Asset(twin=plant, slug="chiller-1", name="Chiller 1", asset_type=chiller_type)
    services.save_asset(asset, actor="setup")
    return asset


# --- Validation, by field --------------------------------------------------------------------

BAD_METRICS = [
    ([{"name": "T", "min": 5, "max": 5}], "[0].min must be below max"),
    ([{"name": "T", "min": 9, "max": 1}], "[0].min must be below max"),
    ([{"name": "T", "cadence_seconds": 0}], "[0].cadence_seconds must be positive"),
    ([{"name": "T", "cadence_seconds": -2}], "[0].cadence_seconds must be positive"),
    ([{"name": "T"}, {"name": "U"}, {"name": "T"}], "[2].name 'T' is declared twice"),
    ([{"name": ""}], "[0].name must be a string of 1 to 64 characters"),
    ([{"unit": "bar"}], "[0].name must be a string of 1 to 64 characters"),
    ([{"name": "T", "max": "high"}], "[0].max must be a finite number"),
    ([{"name": "T", "min": True}], "[0].min must be a finite number"),
    ([{"name": "T", "unit": 3}], "[0].unit must be a string"),
    ([{"name": "T", "scale": 2}], "[0] has unknown keys ['scale']"),
    (["T"], "[0] must be an object"),
    ({"name": "T"}, "must be a list of metric definitions"),
]


@pytest.mark.parametrize(("metrics", "message"), BAD_METRICS)
def test_a_bad_metric_list_on_an_asset_type_is_400_naming_the_field(
        admin_client, users, served, metrics, message):
    """The manifest promises ``errors`` by field name for invalid fields (400)."""
    entries = AuditEntry.objects.count()
    response = send(admin_client, "post", "/asset-types",
                    {"slug": "chiller", "name": "Chiller", "metrics": metrics})
    body = problem(served, response, 400)
    assert any(message in m for m in body["errors"]["metrics"]), body
    assert not AssetType.objects.filter(slug="chiller").exists()
    assert AuditEntry.objects.count() == entries


@pytest.mark.parametrize(("metrics", "message"), BAD_METRICS[:5])
def test_a_bad_metric_list_in_an_update_is_400_and_the_type_is_unchanged(
        admin_client, chiller_type, served, metrics, message):
    response = send(admin_client, "patch", "/asset-types/chiller", {"metrics": metrics},
                    if_match=chiller_type.revision)
    assert any(message in m for m in problem(served, response, 400)["errors"]["metrics"])
    stored = AssetType.objects.get(slug="chiller")
    assert (stored.metrics, stored.revision) == (chiller_type.metrics, chiller_type.revision)


@pytest.mark.parametrize(("metrics", "message"), BAD_METRICS[:5])
def test_a_bad_metric_list_on_an_asset_is_400_naming_the_field(
        admin_client, plant, served, metrics, message):
    response = send(admin_client, "post", "/assets",
                    {"twin": "plant", "slug": "t-1", "name": "T", "metrics": metrics})
    assert any(message in m for m in problem(served, response, 400)["errors"]["metrics"])
    assert not Asset.objects.filter(slug="t-1").exists()


def test_the_service_names_the_field_of_each_problem(db):
    with pytest.raises(services.InvalidTwinModel) as caught:
        services.save_asset_type(AssetType(slug="x", name="X", metrics=[
            {"name": "T", "min": 1, "max": 0, "cadence_seconds": 0}]), actor="test")
    assert caught.value.errors == {"metrics": ["[0].min must be below max",
                                               "[0].cadence_seconds must be positive"]}
    assert caught.value.status == 400


def test_a_well_formed_asset_type_with_catalogue_names_is_accepted(admin_client, users, served):
    response = send(admin_client, "post", "/asset-types", {
        "slug": "big-pump", "name": "Big pump", "base_kind": "pump",
        "metrics": [{"name": "Pressure", "unit": "bar", "min": 0, "max": 16,
                     "cadence_seconds": 1, "description": "discharge"}],
        "actions": [{"action": "reduce_load", "risk_level": "HIGH"}],
        "detector": "ewma", "detector_params": {}, "whatif_model": "pump"})
    assert served.response(response, "asset-type.v1", 201)["actions"] == [
        {"action": "reduce_load", "risk_level": "HIGH"}]


@pytest.mark.parametrize(("field", "value"), [
    ("actions", [{"action": "launch_rocket"}]),
    ("actions", [{"action": "reduce_load", "risk_level": "extreme"}]),
    ("actions", ["reduce_load"]),
    ("detector", "no-such-detector"),
    ("whatif_model", "crystal-ball"),
    ("detector_params", ["not", "an", "object"]),
])
def test_names_the_other_apps_own_are_validated_by_field(
        admin_client, users, served, field, value):
    """Actions belong to policy's catalogue, detectors to telemetry, what-if families to
    simulation (``twins.asset_types.register_validator``): an unknown name is a 400 naming the
    field, never a stored type that its own schema (asset-type.v1) rejects."""
    response = send(admin_client, "post", "/asset-types",
                    {"slug": "odd", "name": "Odd", "base_kind": "pump", field: value})
    assert field in problem(served, response, 400)["errors"]
    assert not AssetType.objects.filter(slug="odd").exists()


# --- Kind, use and deletion -----------------------------------------------------------------

def test_an_asset_takes_its_kind_from_its_type_and_follows_a_change_of_base_kind(
        admin_client, plant, served):
    response = send(admin_client, "post", "/assets", {
        "twin": "plant", "slug": "v-1", "name": "V", "asset_type": "valve", "kind": "pump"})
    asset = served.response(response, "asset.v1", 201)
    assert asset["kind"] == "valve"
    custom = served.response(send(admin_client, "post", "/asset-types", {
        "slug": "dosing", "name": "Dosing", "base_kind": "generic"}), "asset-type.v1", 201)
    moved = send(admin_client, "patch", f"/assets/{asset['id']}", {"asset_type": "dosing"},
                 if_match=1)
    assert served.response(moved, "asset.v1", 200)["kind"] == "generic"
    send(admin_client, "patch", "/asset-types/dosing", {"base_kind": "motor"},
         if_match=custom["revision"])
    stored = Asset.objects.get(pk=asset["id"])
    assert (stored.kind, stored.revision) == ("motor", 3)
    entry = AuditEntry.objects.filter(action="asset.update").order_by("-seq").first()
    assert (entry.before["kind"], entry.after["kind"]) == ("generic", "motor")
    assert "dosing" in entry.reason


def test_deleting_an_asset_type_in_use_is_409_and_keeps_it(admin_client, chiller, served):
    body = problem(served, send(admin_client, "delete", "/asset-types/chiller",
                                if_match=chiller.asset_type.revision), 409)
    assert "chiller" in body["detail"]
    assert AssetType.objects.filter(slug="chiller").exists()
    assert not AuditEntry.objects.filter(action="asset_type.delete").exists()


def test_asset_type_events_are_twin_less_reference_data(admin_client, viewer_client,
                                                        chiller_type, served):
    """An asset type belongs to no twin: its events reach admins (and their actor) only."""
    events = [e for e in feed(admin_client) if e["resource_type"] == "asset_type"]
    assert [(e["type"], e["twin"]) for e in events] == [("asset_type.created", None)]
    served.check("change-event.v1", events[0])
    assert not [e for e in feed(viewer_client) if e["resource_type"] == "asset_type"]


# --- Inherited metrics at ingest ------------------------------------------------------------

def test_an_asset_without_metrics_of_its_own_uses_its_types(chiller):
    assert chiller.metrics == [] and chiller.metric_names == [SUPPLY, "Power"]
    assert chiller.unit_of(SUPPLY) == "Cel"


def test_ingest_accepts_the_types_metrics_and_rejects_others(chiller):
    report = ingest(reading(chiller, T0, {SUPPLY: 7.5, "Power": 30.0}),
                    reading(chiller, T0 + timedelta(seconds=5), {"Flow": 3.0}))
    assert report.accepted == 1
    [(index, reason)] = report.rejected
    assert index == 1 and "Flow" in reason and "not declared" in reason
    assert DeadLetter.objects.get().reason == reason
    assert ReportedMetric.objects.get(asset=chiller, metric=SUPPLY).value == 7.5
    assert not ReportedMetric.objects.filter(metric="Flow").exists()


@pytest.mark.parametrize(("metrics", "accepted"), [
    ({SUPPLY: -10.0}, True), ({SUPPLY: 40.0}, True), ({SUPPLY: 40.5}, False),
    ({SUPPLY: -10.01}, False), ({"Power": 1e6}, True), ({"Power": -0.1}, False),
    ({SUPPLY: 20.0, "Power": -5.0}, False),
])
def test_a_value_outside_its_declared_range_is_a_dead_letter(chiller, metrics, accepted):
    """``min``/``max`` bound inclusively; a missing bound is unbounded; one bad value rejects
    the whole event (nothing stored, reported state untouched)."""
    report = ingest(reading(chiller, T0, metrics))
    assert (report.accepted == 1) is accepted
    assert TelemetryEvent.objects.filter(asset=chiller).exists() is accepted
    assert ReportedMetric.objects.filter(asset=chiller).exists() is accepted
    if not accepted:
        [(_, reason)] = report.rejected
        assert DeadLetter.objects.get().reason == reason


def test_the_dead_letter_says_which_value_which_range_and_which_asset(chiller):
    payload = reading(chiller, T0, {SUPPLY: 55.0})
    ingest(payload)
    letter = DeadLetter.objects.get()
    assert letter.reason == (f"{SUPPLY}=55 is outside its valid range [-10, 40] Cel on asset "
                             "plant/chiller-1")
    assert payload.body["event_id"] in letter.payload


def test_an_asset_with_its_own_metrics_overrides_its_type(plant, chiller_type):
    asset = Asset(twin=plant, slug="chiller-2", name="Chiller 2", asset_type=chiller_type,
                  metrics=[{"name": "Flow", "unit": "m3/h", "max": 100}])
    services.save_asset(asset, actor="setup")
    report = ingest(reading(asset, T0, {"Flow": 50.0}), reading(asset, T0, {SUPPLY: 7.0}),
                    reading(asset, T0, {"Flow": 150.0}))
    assert report.accepted == 1
    assert [i for i, _ in report.rejected] == [1, 2]


def test_a_change_to_the_type_changes_what_the_next_batch_accepts(admin_client, chiller):
    assert ingest(reading(chiller, T0, {SUPPLY: 45.0})).accepted == 0
    asset_type = chiller.asset_type
    metrics = [dict(asset_type.metrics[0], max=50), asset_type.metrics[1]]
    assert send(admin_client, "patch", "/asset-types/chiller", {"metrics": metrics},
                if_match=asset_type.revision).status_code == 200
    assert ingest(reading(chiller, T0, {SUPPLY: 45.0})).accepted == 1


def test_only_admins_change_asset_types_through_the_api(users, chiller_type):
    for role in ("viewer", "agent", "executor", "supervisor"):
        client = Client()
        client.force_login(users[role])
        assert send(client, "patch", "/asset-types/chiller", {"name": "Mine"},
                    if_match=chiller_type.revision).status_code == 403
    assert AssetType.objects.get(slug="chiller").name == "Chiller"


# --- Django admin ---------------------------------------------------------------------------

ADMIN_FORM = {"slug": "boiler", "name": "Boiler", "description": "", "base_kind": "generic",
              "metrics": '[{"name": "Steam pressure", "unit": "bar", "min": 0, "max": 40}]',
              "actions": "[]", "detector": "", "detector_params": "{}", "whatif_model": ""}


def test_admins_manage_asset_types_in_django_admin_audited_and_on_the_feed(
        admin_client, users, served):
    """Issue 14: "Admins manage them in Django admin; they are versioned and audited"."""
    assert admin_client.get("/admin/twins/assettype/").status_code == 200
    response = admin_client.post("/admin/twins/assettype/add/", ADMIN_FORM)
    assert response.status_code == 302, response.content.decode()[:2000]
    asset_type = AssetType.objects.get(slug="boiler")
    assert asset_type.metrics[0]["max"] == 40 and asset_type.revision == 1
    response = admin_client.post(f"/admin/twins/assettype/{asset_type.pk}/change/",
                                 ADMIN_FORM | {"name": "Steam boiler"})
    assert response.status_code == 302
    assert AssetType.objects.get(slug="boiler").revision == 2
    assert list(AuditEntry.objects.filter(resource_type="asset_type").order_by("seq")
                .values_list("action", "actor")) == [("asset_type.create", "admin-user"),
                                                     ("asset_type.update", "admin-user")]
    events = [e for e in feed(admin_client) if e["resource_type"] == "asset_type"]
    assert [e["type"] for e in events] == ["asset_type.created", "asset_type.updated"]
    for event in events:
        served.check("change-event.v1", event)


def test_django_admin_refuses_a_bad_metric_list_and_records_nothing(admin_client, users):
    response = admin_client.post("/admin/twins/assettype/add/", ADMIN_FORM | {
        "metrics": '[{"name": "T", "min": 3, "max": 1}]'})
    assert response.status_code == 200  # the form again, with the error
    assert "min must be below max" in response.content.decode()
    assert not AssetType.objects.filter(slug="boiler").exists()
    assert not AuditEntry.objects.filter(resource_type="asset_type").exists()
