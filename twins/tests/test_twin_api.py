"""The twin API (issue 14): /twins, /asset-types and /assets through HTTP.

Every response is validated against the schema the server serves (twin.v1, asset.v1,
asset-type.v1, problem.v1, change-event.v1 for /diff), every write must leave one audit entry
and one change event, reads carry ``ETag: "<revision>"`` and writes need ``If-Match``.
Permissions are a literal table: role × endpoint × twin in or out of the caller's scope.
"""

from __future__ import annotations

import json
import threading

import pytest
from django.test import Client

from aiw import services as aiw_services
from tests.fixtures import grant_only
from twins import services
from twins.models import Asset, AssetType, AuditEntry, ChangeEvent, Twin
from twins.tests.twin_api import feed, problem, send, tag

pytestmark = pytest.mark.django_db
ROLES = ["viewer", "agent", "executor", "supervisor", "admin", "outsider"]


def audit(resource_type: str) -> list[tuple[str, str]]:
    return list(AuditEntry.objects.filter(resource_type=resource_type).order_by("seq")
                .values_list("action", "actor"))


def events_of(served, client, resource_type: str, resource_id) -> list[str]:
    """The types of the feed's events on one resource, each validated as change-event.v1."""
    found = []
    for event in feed(client):
        if (event["resource_type"], event["resource_id"]) == (resource_type, str(resource_id)):
            served.check("change-event.v1", event, event["type"])
            found.append(event["type"])
    return found


# --- CRUD, schemas, audit, feed ------------------------------------------------------------

def test_twin_crud_is_schema_valid_audited_and_on_the_feed(admin_client, users, served):
    created = send(admin_client, "post", "/twins",
                   {"slug": "mill", "name": "Mill", "description": "Flour mill"})
    body = served.response(created, "twin.v1", 201)
    assert created["ETag"] == tag(1) and body["revision"] == 1
    assert created["Location"].endswith("/twins/mill")
    detail = admin_client.get("/twins/mill")
    assert served.response(detail, "twin.v1", 200)["name"] == "Mill"
    assert detail["ETag"] == tag(1)
    listed = admin_client.get("/twins")
    assert listed.status_code == 200
    for item in listed.json():
        served.check("twin.v1", item)
    assert "mill" in {t["slug"] for t in listed.json()}

    patched = served.response(send(admin_client, "patch", "/twins/mill", {"name": "Mill 2"},
                                   if_match=1), "twin.v1", 200)
    assert (patched["name"], patched["revision"]) == ("Mill 2", 2)
    put = send(admin_client, "put", "/twins/mill",
               {"slug": "mill", "name": "Mill 3", "description": ""}, if_match=2)
    assert served.response(put, "twin.v1", 200)["revision"] == 3 and put["ETag"] == tag(3)
    pk = Twin.objects.get(slug="mill").pk
    assert send(admin_client, "delete", "/twins/mill", if_match=3).status_code == 204
    assert admin_client.get("/twins/mill").status_code == 404

    assert audit("twin") == [("twin.create", "admin-user"), ("twin.update", "admin-user"),
                             ("twin.update", "admin-user"), ("twin.delete", "admin-user")]
    update = AuditEntry.objects.filter(action="twin.update").order_by("seq").first()
    assert (update.before["name"], update.after["name"]) == ("Mill", "Mill 2")
    assert events_of(served, admin_client, "twin", pk) == [
        "twin.created", "twin.updated", "twin.updated", "twin.deleted"]


def test_asset_crud_is_schema_valid_audited_and_on_the_feed(admin_client, plant, served):
    line = served.response(send(admin_client, "post", "/assets", {
        "twin": "plant", "slug": "line-1", "name": "Line 1"}), "asset.v1", 201)
    response = send(admin_client, "post", "/assets", {
        "twin": "plant", "slug": "pump-1", "name": "Pump 1", "asset_type": "pump",
        "parent": "line-1", "metadata": {"vendor": "KSB"},
        "metrics": [{"name": "Pressure", "unit": "bar", "min": 0, "max": 10}]})
    pump = served.response(response, "asset.v1", 201)
    assert (pump["kind"], pump["parent"], pump["asset_type"], pump["revision"]) == (
        "pump", "line-1", "pump", 1)
    assert response["ETag"] == tag(1)
    assert response["Location"].endswith(f"/assets/{pump['id']}")
    detail = admin_client.get(f"/assets/{pump['id']}")
    assert served.response(detail, "asset.v1", 200)["metadata"] == {"vendor": "KSB"}
    assert detail["ETag"] == tag(1)
    for item in admin_client.get("/assets").json():
        served.check("asset.v1", item)

    patched = served.response(send(admin_client, "patch", f"/assets/{pump['id']}",
                                   {"metadata": {"vendor": "Grundfos"}}, if_match=1),
                              "asset.v1", 200)
    assert (patched["metadata"], patched["revision"]) == ({"vendor": "Grundfos"}, 2)
    assert send(admin_client, "delete", f"/assets/{pump['id']}", if_match=2).status_code == 204
    assert not Asset.objects.filter(pk=pump["id"]).exists()

    assert audit("asset") == [("asset.create", "admin-user"), ("asset.create", "admin-user"),
                              ("asset.update", "admin-user"), ("asset.delete", "admin-user")]
    assert set(AuditEntry.objects.filter(resource_type="asset")
               .values_list("twin_slug", flat=True)) == {"plant"}
    assert events_of(served, admin_client, "asset", pump["id"]) == [
        "asset.created", "asset.updated", "asset.deleted"]
    assert events_of(served, admin_client, "asset", line["id"]) == ["asset.created"]


def test_asset_type_crud_is_schema_valid_audited_and_on_the_feed(admin_client, users, served):
    created = send(admin_client, "post", "/asset-types", {
        "slug": "chiller", "name": "Chiller", "base_kind": "generic",
        "metrics": [{"name": "Supply temperature", "unit": "Cel", "min": -10, "max": 40,
                     "cadence_seconds": 5}]})
    body = served.response(created, "asset-type.v1", 201)
    assert created["ETag"] == tag(1) and body["metrics"][0]["cadence_seconds"] == 5
    detail = admin_client.get("/asset-types/chiller")
    assert served.response(detail, "asset-type.v1", 200)["slug"] == "chiller"
    listed = admin_client.get("/asset-types").json()
    for item in listed:
        served.check("asset-type.v1", item)
    assert {"pump", "valve", "motor", "generic", "chiller"} <= {t["slug"] for t in listed}
    patched = send(admin_client, "patch", "/asset-types/chiller", {"name": "Chiller 2"},
                   if_match=1)
    assert served.response(patched, "asset-type.v1", 200)["revision"] == 2
    assert send(admin_client, "delete", "/asset-types/chiller", if_match=2).status_code == 204
    assert not AssetType.objects.filter(slug="chiller").exists()
    assert audit("asset_type") == [("asset_type.create", "admin-user"),
                                   ("asset_type.update", "admin-user"),
                                   ("asset_type.delete", "admin-user")]
    assert events_of(served, admin_client, "asset_type", body["id"]) == [
        "asset_type.created", "asset_type.updated", "asset_type.deleted"]


def test_the_manifest_names_the_twin_resources_and_their_routes(admin_client, users):
    manifest = admin_client.get("/.well-known/aiw-manifest.json").json()
    assert {k: manifest["resources"][k] for k in ("twin", "asset", "asset_type", "asset_state")
            } == {"twin": "twin.v1", "asset": "asset.v1", "asset_type": "asset-type.v1",
                  "asset_state": "asset-state.v1"}
    routes = {(o["method"], o["path"]) for o in manifest["operations"]}
    assert {("GET", "/twins"), ("POST", "/twins"), ("PATCH", "/twins/{slug}"),
            ("DELETE", "/assets/{id}"), ("PUT", "/asset-types/{slug}"),
            ("GET", "/assets/{id}/state")} <= routes


# --- ETag, If-None-Match, If-Match ---------------------------------------------------------

@pytest.fixture
def resources(plant):
    """One of each resource at revision 1: path and model row."""
    asset_type = AssetType.objects.create(slug="chiller", name="Chiller")
    asset = Asset.objects.create(twin=plant, slug="pump-1", name="Pump 1")
    return {"twin": ("/twins/plant", plant, {"name": "Renamed"}),
            "asset": (f"/assets/{asset.pk}", asset, {"name": "Renamed"}),
            "asset_type": ("/asset-types/chiller", asset_type, {"name": "Renamed"})}


RESOURCES = ["twin", "asset", "asset_type"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_etag_is_the_revision_and_if_none_match_answers_304(admin_client, users, resources,
                                                            resource):
    path, row, change = resources[resource]
    first = admin_client.get(path)
    assert first.status_code == 200 and first["ETag"] == tag(row.revision) == tag(1)
    cached = admin_client.get(path, headers={"If-None-Match": tag(1)})
    assert cached.status_code == 304 and cached["ETag"] == tag(1) and cached.content == b""
    assert send(admin_client, "patch", path, change, if_match=1).status_code == 200
    fresh = admin_client.get(path, headers={"If-None-Match": tag(1)})
    assert fresh.status_code == 200 and fresh["ETag"] == tag(2)
    assert fresh.json()["revision"] == 2


@pytest.mark.parametrize("header", ['W/"1"', '"7", "1"', "*"])
def test_if_none_match_uses_the_weak_comparison_and_lists_of_rfc_9110(
        admin_client, users, resources, header):
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a proxy that compresses turns "1" into
    W/"1"), may list several tags, and * matches any current representation."""
    path, _row, _change = resources["asset"]
    assert admin_client.get(path, headers={"If-None-Match": header}).status_code == 304


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
@pytest.mark.parametrize(("if_match", "status"), [(None, 428), ('"0"', 412), ('"2"', 412),
                                                   ("W/\"5\"", 412), ("soon", 412)])
def test_a_write_without_if_match_is_428_and_a_stale_one_412_and_nothing_changes(
        admin_client, users, resources, served, resource, method, if_match, status):
    path, row, change = resources[resource]
    body = None
    if method == "put":
        body = served.response(admin_client.get(path), f"{resource.replace('_', '-')}.v1", 200)
        body = {k: v for k, v in body.items()
                if k not in ("id", "revision", "created_at", "updated_at", "kind", "desired")}
        body["name"] = "Renamed"
    elif method == "patch":
        body = change
    entries, events = AuditEntry.objects.count(), ChangeEvent.objects.count()
    response = send(admin_client, method, path, body, if_match=if_match)
    problem(served, response, status)
    row.refresh_from_db()
    assert row.revision == 1 and row.name != "Renamed"
    assert (AuditEntry.objects.count(), ChangeEvent.objects.count()) == (entries, events)


@pytest.mark.parametrize("resource", RESOURCES)
def test_if_match_star_writes_whatever_the_revision(admin_client, users, resources, resource):
    path, row, change = resources[resource]
    assert send(admin_client, "patch", path, change, if_match="*").status_code == 200
    assert send(admin_client, "patch", path, {"name": "Again"}, if_match="*").status_code == 200
    row.refresh_from_db()
    assert (row.revision, row.name) == (3, "Again")
    assert send(admin_client, "delete", path, if_match="*").status_code == 204


@pytest.mark.django_db(transaction=True)
def test_two_writers_racing_on_one_revision_exactly_one_wins(users):
    """Two API clients PATCH the same asset with If-Match "1" at once, and two service calls
    save copies both loaded at revision 1: each time one is applied and the other is 412."""
    twin = Twin.objects.create(slug="race", name="Race")
    asset = Asset.objects.create(twin=twin, slug="pump-1", name="Pump")
    from django.db import connection

    def run_all(jobs) -> list:
        barrier, results = threading.Barrier(len(jobs)), [None] * len(jobs)

        def worker(i, job):
            try:
                barrier.wait(timeout=30)
                results[i] = job()
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                results[i] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=worker, args=(i, j)) for i, j in enumerate(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return results

    clients = []
    for name in ("first", "second"):
        client = Client()
        client.force_login(users["admin"])
        clients.append((client, name))
    statuses = run_all([
        lambda c=c, n=n: c.patch(f"/assets/{asset.pk}", json.dumps({"name": n}),
                                 content_type="application/json",
                                 headers={"If-Match": tag(1)}).status_code
        for c, n in clients])
    assert sorted(statuses) == [200, 412]
    asset.refresh_from_db()
    assert asset.revision == 2 and asset.name in ("first", "second")
    assert AuditEntry.objects.filter(action="asset.update").count() == 1

    copies = [Asset.objects.get(pk=asset.pk) for _ in range(2)]
    for copy, name in zip(copies, ("third", "fourth"), strict=True):
        copy.name = name
    outcomes = run_all([lambda c=c: services.save_asset(c, actor="racer", expected_revision=2)
                        for c in copies])
    assert sorted(type(o).__name__ for o in outcomes) == ["ChangeEvent", "StaleRevision"]
    asset.refresh_from_db()
    assert asset.revision == 3 and asset.name in ("third", "fourth")
    assert AuditEntry.objects.filter(action="asset.update").count() == 2


# --- Hierarchy and filters ----------------------------------------------------------------

@pytest.fixture
def hierarchy(plant):
    """plant: site → line-1 → {pump-1 (pump), valve-1 (valve)}; elsewhere: site → line-9."""
    elsewhere = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    types = {t.slug: t for t in AssetType.objects.filter(slug__in=["pump", "valve"])}

    def make(twin, slug, parent=None, asset_type=None):
        asset = Asset(twin=twin, slug=slug, name=slug.title(), parent=parent,
                      asset_type=types.get(asset_type))
        services.save_asset(asset, actor="setup")
        return asset

    site = make(plant, "site")
    line = make(plant, "line-1", site)
    other_site = make(elsewhere, "site")
    return {"site": site, "line": line, "pump": make(plant, "pump-1", line, "pump"),
            "valve": make(plant, "valve-1", line, "valve"), "other_site": other_site,
            "other_line": make(elsewhere, "line-9", other_site)}


def test_a_parent_in_another_twin_is_refused_by_the_api_and_the_service(
        admin_client, hierarchy, served):
    response = send(admin_client, "post", "/assets", {
        "twin": "plant", "slug": "pump-2", "name": "Pump 2", "parent": "line-9"})
    assert "parent" in problem(served, response, 400)["errors"]
    with pytest.raises(services.InvalidTwinModel) as caught:
        services.save_asset(Asset(twin=hierarchy["line"].twin, slug="pump-2", name="P",
                                  parent=hierarchy["other_line"]), actor="test")
    assert caught.value.errors == {"parent": ["must be an asset of the same twin"]}
    assert not Asset.objects.filter(slug="pump-2").exists()


@pytest.mark.parametrize(("asset", "parent"), [("site", "pump-1"), ("line-1", "line-1"),
                                               ("site", "line-1")])
def test_a_cycle_is_400_and_nothing_changes(admin_client, hierarchy, served, asset, parent):
    row = Asset.objects.get(twin__slug="plant", slug=asset)
    entries = AuditEntry.objects.count()
    response = send(admin_client, "patch", f"/assets/{row.pk}", {"parent": parent},
                    if_match=row.revision)
    body = problem(served, response, 400)
    assert "cycle" in body["detail"] and "parent" in body["detail"]
    before = (row.parent_id, row.revision)
    row.refresh_from_db()
    assert (row.parent_id, row.revision) == before
    assert AuditEntry.objects.count() == entries


def test_an_asset_cannot_move_to_another_twin(admin_client, hierarchy, served):
    pump = hierarchy["pump"]
    response = send(admin_client, "patch", f"/assets/{pump.pk}", {"twin": "elsewhere"},
                    if_match=pump.revision)
    assert "twin" in problem(served, response, 400)["errors"]
    assert Asset.objects.get(pk=pump.pk).twin.slug == "plant"


def test_deleting_a_parent_with_children_is_409_and_deleting_the_twin_goes_leaves_first(
        admin_client, hierarchy, served):
    line = hierarchy["line"]
    body = problem(served, send(admin_client, "delete", f"/assets/{line.pk}",
                                if_match=line.revision), 409)
    assert "pump-1" in body["detail"] and "valve-1" in body["detail"]
    assert Asset.objects.filter(pk=line.pk).exists()
    assert not AuditEntry.objects.filter(action="asset.delete").exists()

    plant = line.twin
    assert send(admin_client, "delete", "/twins/plant", if_match=plant.revision
                ).status_code == 204
    deleted = list(AuditEntry.objects.filter(action__in=["asset.delete", "twin.delete"])
                   .order_by("seq").values_list("action", "before__slug"))
    assert deleted[-1] == ("twin.delete", "plant")
    order = [slug for _, slug in deleted[:-1]]
    assert sorted(order) == ["line-1", "pump-1", "site", "valve-1"]
    assert order.index("line-1") > max(order.index("pump-1"), order.index("valve-1"))
    assert order.index("site") > order.index("line-1")
    assert set(Asset.objects.values_list("slug", flat=True)) == {"site", "line-9"}


@pytest.mark.parametrize(("query", "expected"), [
    ({"twin": "plant"}, {"plant/site", "plant/line-1", "plant/pump-1", "plant/valve-1"}),
    ({"twin": "elsewhere"}, {"elsewhere/site", "elsewhere/line-9"}),
    ({"parent": "line-1"}, {"plant/pump-1", "plant/valve-1"}),
    ({"root": "true"}, {"plant/site", "elsewhere/site"}),
    ({"root": "true", "twin": "plant"}, {"plant/site"}),
    ({"root": "false", "twin": "elsewhere"}, {"elsewhere/line-9"}),
    ({"asset_type": "valve"}, {"plant/valve-1"}),
    ({"kind": "pump"}, {"plant/pump-1"}),
    ({"kind": "generic", "twin": "plant"}, {"plant/site", "plant/line-1"}),
    ({"slug": "site"}, {"plant/site", "elsewhere/site"}),
])
def test_asset_filters(admin_client, hierarchy, served, query, expected):
    response = admin_client.get("/assets", query)
    assert response.status_code == 200
    for item in response.json():
        served.check("asset.v1", item)
    assert {f"{a['twin']}/{a['slug']}" for a in response.json()} == expected


def test_a_bad_filter_value_is_a_400_problem(admin_client, hierarchy, served):
    assert "kind" in problem(served, admin_client.get("/assets", {"kind": "boiler"}),
                             400)["errors"]
    assert "base_kind" in problem(served, admin_client.get("/asset-types",
                                                            {"base_kind": "boiler"}), 400)["errors"]


def test_twin_and_asset_type_filters(admin_client, hierarchy):
    assert [t["slug"] for t in admin_client.get("/twins", {"name": "ELSE"}).json()] == [
        "elsewhere"]
    assert [t["slug"] for t in admin_client.get("/twins", {"slug": "plant"}).json()] == [
        "plant"]
    assert [t["slug"] for t in admin_client.get("/asset-types", {"base_kind": "valve"}
                                                ).json()] == ["valve"]


def test_a_duplicate_asset_slug_in_a_twin_is_refused_not_500(admin_client, hierarchy, served):
    response = send(admin_client, "post", "/assets",
                    {"twin": "plant", "slug": "pump-1", "name": "Again"})
    assert response.status_code in (400, 409)
    problem(served, response, response.status_code)
    assert Asset.objects.filter(twin__slug="plant", slug="pump-1").count() == 1


# --- Permissions: role × endpoint × twin in or out of scope --------------------------------

@pytest.fixture
def world(users):
    """Two twins, each line-1 → pump-1; role users granted "plant" only, object by object;
    an asset type no asset uses."""
    twins = {"in": Twin.objects.create(slug="plant", name="Plant"),
             "out": Twin.objects.create(slug="elsewhere", name="Elsewhere")}
    for twin in twins.values():
        line = Asset.objects.create(twin=twin, slug="line-1", name="Line 1")
        Asset.objects.create(twin=twin, slug="pump-1", name="Pump 1", parent=line,
                             asset_type=AssetType.objects.get(slug="pump"), kind="pump")
    AssetType.objects.create(slug="custom", name="Custom")
    grant_only(users, twins["in"])
    return twins


#: endpoint: (method, path, body); {twin} is the twin's slug, {pump} its pump's id.
ENDPOINTS = {
    "twins.list": ("get", "/twins", None),
    "twins.detail": ("get", "/twins/{twin}", None),
    "twins.create": ("post", "/twins", {"slug": "new-{twin}", "name": "New"}),
    "twins.update": ("patch", "/twins/{twin}", {"name": "Renamed"}),
    "twins.delete": ("delete", "/twins/{twin}", None),
    "assets.list": ("get", "/assets", None),
    "assets.detail": ("get", "/assets/{pump}", None),
    "assets.create": ("post", "/assets", {"twin": "{twin}", "slug": "sensor-9",
                                          "name": "Sensor 9", "parent": "line-1",
                                          "metadata": {"registered_by": "agent"}}),
    "assets.update": ("patch", "/assets/{pump}", {"metadata": {"vendor": "KSB"}}),
    "assets.delete": ("delete", "/assets/{pump}", None),
    "asset_types.list": ("get", "/asset-types", None),
    "asset_types.detail": ("get", "/asset-types/custom", None),
    "asset_types.create": ("post", "/asset-types", {"slug": "new-{twin}", "name": "New"}),
    "asset_types.update": ("patch", "/asset-types/custom", {"name": "Renamed"}),
    "asset_types.delete": ("delete", "/asset-types/custom", None),
    "state": ("get", "/assets/{pump}/state", None),
}
_READS = {"twins.list": 200, "assets.list": 200, "asset_types.list": 200,
          "asset_types.detail": 200}
_TYPES_REFUSED = {"asset_types.create": 403, "asset_types.update": 403,
                  "asset_types.delete": 403}


def _granted(**writes) -> dict[str, tuple]:
    """A role granted "plant": reads 200 in scope and 404 outside; ``writes`` in scope."""
    row = {e: (s, s) for e, s in (_READS | _TYPES_REFUSED).items()}
    row |= {e: (200, 404) for e in ("twins.detail", "assets.detail", "state")}
    row |= {e: (403, 404) for e in ("twins.update", "twins.delete", "assets.create",
                                    "assets.update", "assets.delete")}
    row["twins.create"] = (403, 403)
    return row | {e: (s, 404) for e, s in writes.items()}


#: role → endpoint → (status on "plant", in the caller's scope; status on "elsewhere")
TABLE = {
    "viewer": _granted(),
    "agent": _granted(**{"assets.create": 201, "assets.update": 200}),
    "executor": _granted(),
    "supervisor": _granted(),
    "admin": {"twins.list": (200, 200), "twins.detail": (200, 200),
              "twins.create": (201, 201), "twins.update": (200, 200),
              "twins.delete": (204, 204), "assets.list": (200, 200),
              "assets.detail": (200, 200), "assets.create": (201, 201),
              "assets.update": (200, 200), "assets.delete": (204, 204),
              "asset_types.list": (200, 200), "asset_types.detail": (200, 200),
              "asset_types.create": (201, 201), "asset_types.update": (200, 200),
              "asset_types.delete": (204, 204), "state": (200, 200)},
    "outsider": {e: (s, s) for e, s in (_READS | _TYPES_REFUSED).items()} | {
        "twins.create": (403, 403)} | {
        e: (404, 404) for e in ("twins.detail", "twins.update", "twins.delete",
                                "assets.detail", "assets.create", "assets.update",
                                "assets.delete", "state")},
}
CASES = [(role, endpoint, *statuses) for role, row in TABLE.items()
         for endpoint, statuses in row.items()]


def test_the_table_covers_every_role_and_endpoint():
    assert {(r, e) for r, e, *_ in CASES} == {(r, e) for r in ROLES for e in ENDPOINTS}


@pytest.mark.parametrize("scope", ["in", "out"])
@pytest.mark.parametrize(("role", "endpoint", "in_scope", "out_of_scope"), CASES)
def test_role_endpoint_twin_matrix(world, users, role, endpoint, in_scope, out_of_scope,
                                   scope):
    """The API's status for each role on each endpoint; a refused write records nothing and a
    successful one exactly one audit entry per resource written."""
    twin = world[scope]
    pump = twin.assets.get(slug="pump-1")
    method, path, body = ENDPOINTS[endpoint]
    path = path.format(twin=twin.slug, pump=pump.pk)
    if body is not None:
        body = {k: v.format(twin=twin.slug) if isinstance(v, str) else v
                for k, v in body.items()}
    revision = {"twins": twin.revision, "assets": pump.revision,
                "asset_types": 1}[endpoint.split(".")[0]] if method in ("patch",
                                                                        "delete") else None
    client = Client()
    client.force_login(users[role])
    entries = AuditEntry.objects.count()
    response = send(client, method, path, body, if_match=revision)
    expected = in_scope if scope == "in" else out_of_scope
    assert response.status_code == expected, response.content[:300]
    if method != "get" and expected >= 400:
        assert AuditEntry.objects.count() == entries
    if method != "get" and expected < 300:
        assert AuditEntry.objects.count() > entries


@pytest.mark.parametrize(("role", "sees"), [
    ("viewer", {"plant"}), ("agent", {"plant"}), ("supervisor", {"plant"}),
    ("admin", {"plant", "elsewhere"}), ("outsider", set())])
def test_lists_show_only_the_twins_in_scope(world, users, role, sees):
    client = Client()
    client.force_login(users[role])
    assert {t["slug"] for t in client.get("/twins").json()} == sees
    assets = client.get("/assets").json()
    assert {a["twin"] for a in assets} == sees
    hidden = {a["twin"] for a in client.get("/assets", {"twin": "elsewhere"}).json()}
    assert (hidden == {"elsewhere"}) is ("elsewhere" in sees)


def test_an_out_of_scope_twin_reads_exactly_like_a_missing_one(world, users, served):
    """Creating an asset on a twin outside the caller's scope answers as for a twin that does
    not exist: the caller learns nothing about it."""
    client = Client()
    client.force_login(users["agent"])
    body = {"name": "Sensor", "slug": "sensor-9"}
    hidden = send(client, "post", "/assets", body | {"twin": "elsewhere"})
    missing = send(client, "post", "/assets", body | {"twin": "nowhere"})
    assert hidden.status_code == missing.status_code
    assert hidden.json()["detail"].replace("elsewhere", "X") == \
        missing.json()["detail"].replace("nowhere", "X")


def test_an_agent_token_with_write_scope_registers_an_asset_and_follows_it_on_the_feed(
        world, users, served):
    """Agents with a grant register assets and report metadata over a bearer token; a
    read-only token may read but not register."""
    _row, writer = aiw_services.issue_token(user=users["agent"], name="bot",
                                            scopes=["read", "write"])
    _row, reader = aiw_services.issue_token(user=users["agent"], name="ro", scopes=["read"])
    client = Client()
    body = {"twin": "plant", "slug": "sensor-7", "name": "Sensor 7", "parent": "line-1",
            "metadata": {"firmware": "1.2"}}
    refused = send(client, "post", "/assets", body, Authorization=f"Bearer {reader}")
    assert refused.status_code == 403
    response = send(client, "post", "/assets", body, Authorization=f"Bearer {writer}")
    asset = served.response(response, "asset.v1", 201)
    patched = send(client, "patch", f"/assets/{asset['id']}", {"metadata": {"firmware": "1.3"}},
                   if_match=1, Authorization=f"Bearer {writer}")
    assert served.response(patched, "asset.v1", 200)["metadata"] == {"firmware": "1.3"}
    assert AuditEntry.objects.filter(resource_id=str(asset["id"]), actor="agent-user",
                                     role="agent").count() == 2
    viewer = Client()
    viewer.force_login(users["viewer"])
    assert events_of(served, viewer, "asset", asset["id"]) == ["asset.created", "asset.updated"]


def _hold_audit_lock_while(jobs) -> None:
    """Run ``jobs`` in threads while this test holds the audit chain's lock (every write takes
    it before commit), and release it once two lock waits are seen (or after 30 s): each
    writer then waits at the audit lock or at the other's row lock. The interleaving is forced,
    not left to chance."""
    import time

    from django.db import connection

    from twins.ledger import AUDIT_LOCK_KEY

    def run(job):
        try:
            job()
        finally:
            connection.close()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [AUDIT_LOCK_KEY])
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            with connection.cursor() as cursor:
                # Backends of this database waiting on any lock: the audit lock, or a row
                # lock (a transaction-id lock, which pg_locks files under no database).
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                               "datname = current_database() AND wait_event_type = 'Lock'")
                if cursor.fetchone()[0] >= len(jobs):
                    break
            time.sleep(0.05)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [AUDIT_LOCK_KEY])
        for thread in threads:
            thread.join(timeout=60)


def _reparent(outcomes: dict, child_pk: int, parent_pk: int):
    def job():
        try:
            child = Asset.objects.get(pk=child_pk)
            child.parent_id = parent_pk
            outcomes[child_pk] = services.save_asset(child, actor="racer")
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[child_pk] = exc
    return job


def _has_cycle(twin) -> bool:
    parents = dict(Asset.objects.filter(twin=twin).values_list("pk", "parent_id"))
    for start in parents:
        seen, node = set(), start
        while node is not None:
            if node in seen:
                return True
            seen.add(node)
            node = parents.get(node)
    return False


@pytest.mark.django_db(transaction=True)
def test_two_writers_pointing_two_assets_at_each_other_make_no_cycle_and_no_500(users):
    """A → parent B and B → parent A at the same time: one is saved, the other is refused as a
    cycle (400), neither a cycle in the hierarchy nor a database deadlock (a 500)."""
    twin = Twin.objects.create(slug="race", name="Race")
    a = Asset.objects.create(twin=twin, slug="a", name="A")
    b = Asset.objects.create(twin=twin, slug="b", name="B")
    outcomes: dict = {}
    _hold_audit_lock_while([_reparent(outcomes, a.pk, b.pk), _reparent(outcomes, b.pk, a.pk)])
    assert not _has_cycle(twin), outcomes
    assert sorted(type(o).__name__ for o in outcomes.values()) == [
        "ChangeEvent", "InvalidTwinModel"], outcomes


@pytest.mark.django_db(transaction=True)
def test_two_writers_closing_a_longer_loop_make_no_cycle(users):
    """B is a child of A; at the same time A is moved under C and C under B. Each change alone
    is fine, together they make A → C → B → A: at most one may be saved."""
    twin = Twin.objects.create(slug="race", name="Race")
    a = Asset.objects.create(twin=twin, slug="a", name="A")
    Asset.objects.create(twin=twin, slug="b", name="B", parent=a)
    c = Asset.objects.create(twin=twin, slug="c", name="C")
    b = Asset.objects.get(slug="b")
    outcomes: dict = {}
    _hold_audit_lock_while([_reparent(outcomes, a.pk, c.pk), _reparent(outcomes, c.pk, b.pk)])
    assert not _has_cycle(twin), outcomes
    assert sorted(type(o).__name__ for o in outcomes.values()) == [
        "ChangeEvent", "InvalidTwinModel"], outcomes
