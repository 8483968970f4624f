"""AIW: manifest, schemas, and the /diff change feed (order, cursor, scope, gap-freedom)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from guardian.shortcuts import assign_perm

from aiw.feed import decode_cursor, encode_cursor
from aiw.models import ChangeEvent
from policy.audit import record_change
from twins.models import Twin

pytestmark = pytest.mark.django_db


def touch(twin, n: int = 1, actor: str = "test") -> None:
    for _ in range(n):
        with transaction.atomic():
            record_change(actor=actor, action="twin.touch", resource_type="twin",
                          resource_id=twin.pk, operation="updated", twin=twin,
                          after={"id": twin.pk, "slug": twin.slug})


def test_the_manifest_lists_endpoints_schemas_and_the_callers_permissions(viewer_client):
    response = viewer_client.get("/.well-known/aiw-manifest.json")
    assert response.status_code == 200
    body = response.json()
    assert body["aiw_version"] == "1.0"
    assert body["endpoints"]["diff"].endswith("/diff")
    assert "telemetry.v1" in body["schemas"]
    assert "twins.view_twin" in body["caller"]["permissions"]
    etag = response["ETag"]
    assert viewer_client.get("/.well-known/aiw-manifest.json",
                             HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_every_listed_schema_is_served_and_unknown_ones_are_404(client):
    index = client.get("/schemas").json()["schemas"]
    assert {"telemetry.v1"} <= {s["name"] for s in index}
    for entry in index:
        assert client.get(f"/schemas/{entry['name']}").json()["title"] == entry["name"]
    missing = client.get("/schemas/nope.v9")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"


def test_diff_serves_events_in_order_and_resumes_from_next_cursor(viewer_client, twin):
    touch(twin, 5)
    first = viewer_client.get("/diff", {"since": "0", "limit": 3}).json()
    assert [e["id"] for e in first["events"]] == sorted(e["id"] for e in first["events"])
    assert first["has_more"] is True and len(first["events"]) == 3
    rest = viewer_client.get("/diff", {"since": first["next_cursor"]}).json()
    assert len(rest["events"]) == 2 and rest["has_more"] is False
    seen = [e["id"] for e in first["events"] + rest["events"]]
    assert seen == list(ChangeEvent.objects.order_by("id").values_list("id", flat=True))


def test_an_unknown_cursor_is_410_with_resync_instructions(viewer_client, twin):
    touch(twin)
    for cursor in ["garbage!", encode_cursor(10_000)]:
        response = viewer_client.get("/diff", {"since": cursor})
        assert response.status_code == 410
        assert response.json()["resync"].endswith("/snapshot")


def test_diff_hides_twins_outside_the_callers_scope(client, django_user_model, twin):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    touch(twin)
    touch(other)
    user = django_user_model.objects.create_user("scoped", password="pw")
    assign_perm("twins.view_twin", user, twin)
    client.force_login(user)
    events = client.get("/diff").json()["events"]
    assert {e["twin"] for e in events} == {"plant"}


def test_diff_needs_authentication(client):
    assert client.get("/diff").status_code in (401, 403)


def test_cursors_round_trip():
    assert decode_cursor("0") == 0


@pytest.mark.django_db(transaction=True)
def test_a_reader_following_the_feed_under_concurrent_writers_misses_nothing(twin):
    """GIVEN 4 writers committing 25 changes each, WHEN a reader follows id > cursor all along,
    THEN it sees every event exactly once and in id order."""
    from aiw.feed import events_after

    done, seen = threading.Event(), []

    def writer():
        try:
            touch(twin, 25)
        finally:
            connection.close()

    def reader():
        last = 0
        try:
            while True:
                finished = done.is_set()
                batch = events_after(last, ChangeEvent.objects.all(), 1000)
                seen.extend(e.id for e in batch)
                last = batch[-1].id if batch else last
                if finished and not batch:
                    return
        finally:
            connection.close()

    writers = [threading.Thread(target=writer) for _ in range(4)]
    follower = threading.Thread(target=reader)
    follower.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    follower.join(timeout=30)
    assert len(seen) == 100
    assert seen == sorted(set(seen))
    assert seen == list(ChangeEvent.objects.order_by("id").values_list("id", flat=True))
