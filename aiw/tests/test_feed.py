"""AIW: manifest, schemas, and the /diff change feed (order, cursor, scope, gap-freedom)."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import pytest
from django.db import connection, transaction
from guardian.shortcuts import assign_perm

from aiw import services
from aiw.api import views
from aiw.api.serializers import ChangeEventSerializer
from aiw.feed import InvalidCursor, decode_cursor, encode_cursor, parse_cursor
from aiw.tests.conftest import bearer, touch
from twins.api.serializers import TwinSerializer
from twins.ledger import record_change
from twins.models import ChangeEvent, Twin

pytestmark = pytest.mark.django_db
MANIFEST = "/.well-known/aiw-manifest.json"


def test_the_manifest_lists_endpoints_schemas_limits_and_the_callers_permissions(
    viewer_client, users, twin
):
    response = viewer_client.get(MANIFEST)
    assert response.status_code == 200
    body = response.json()
    assert body["aiw_version"] == "1.0"
    assert body["endpoints"]["diff"].endswith("/diff")
    assert body["endpoints"]["subscribe"].endswith("/subscribe")
    assert body["endpoints"]["websocket"] == "ws://testserver/ws/feed"
    assert {"telemetry.v1", "proposal.v1", "change-event.v1"} <= set(body["schemas"])
    assert body["resources"]["proposal"] == "proposal.v1"
    assert body["limits"]["diff_max_limit"] == 1000
    assert [a["type"] for a in body["auth"]] == ["bearer", "session"]
    assert "twins.view_changeevent" in body["caller"]["permissions"]
    assert body["caller"]["role"] == "viewer" and body["caller"]["auth"] == "session"
    everywhere = users["viewer"].has_perm("twins.view_twin")  # a global grant, or per twin
    assert body["caller"]["twins"]["view"] == (["*"] if everywhere else ["plant"])
    assert response["Cache-Control"] == "private, max-age=60"
    etag = response["ETag"]
    assert viewer_client.get(MANIFEST, HTTP_IF_NONE_MATCH=etag).status_code == 304


@pytest.mark.parametrize("accept", [
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # a browser
    "text/html",
    "application/xml",
    "",
])
def test_the_manifest_is_json_whatever_the_accept_header(client, accept):
    """Opened in a browser (or asked for HTML or XML only) it is still the JSON document,
    never DRF's browsable HTML page nor a 406."""
    response = client.get(MANIFEST, HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["aiw_version"] == "1.0"


def test_the_manifest_describes_a_token_caller_and_its_twins(client, users, make_token, twin):
    Twin.objects.create(slug="elsewhere", name="Elsewhere")
    assign_perm("twins.view_twin", users["outsider"], twin)
    token = make_token(user=users["outsider"], scopes=["read"])
    caller = client.get(MANIFEST, headers=bearer(token)).json()["caller"]
    assert caller["auth"] == "token"
    assert caller["token"]["scopes"] == ["read"] and caller["token"]["prefix"] == token[4:12]
    assert caller["twins"] == {"view": ["plant"], "operate": []}


def test_the_manifest_differs_per_caller_so_its_etag_does_too(viewer_client, agent_client):
    assert viewer_client.get(MANIFEST)["ETag"] != agent_client.get(MANIFEST)["ETag"]


def test_every_listed_schema_is_served_and_unknown_ones_are_404(client):
    index = client.get("/schemas").json()["schemas"]
    assert {"telemetry.v1", "decision.v1", "action.v1"} <= {s["name"] for s in index}
    for entry in index:
        response = client.get(f"/schemas/{entry['name']}")
        assert response["Content-Type"] == "application/schema+json"
        assert response.json()["title"] == entry["name"]
    missing = client.get("/schemas/nope.v9")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"
    assert "telemetry.v1" in missing.json()["known"]


def test_diff_serves_events_in_order_and_resumes_from_next_cursor(viewer_client, twin):
    touch(twin, 5)
    first = viewer_client.get("/diff", {"since": "0", "limit": 3}).json()
    assert [e["id"] for e in first["events"]] == sorted(e["id"] for e in first["events"])
    assert first["has_more"] is True and len(first["events"]) == 3
    rest = viewer_client.get("/diff", {"since": first["next_cursor"]}).json()
    assert len(rest["events"]) == 2 and rest["has_more"] is False
    seen = [e["id"] for e in first["events"] + rest["events"]]
    # every event the viewer may see (the token's own issue is twin-less: admins only)
    assert seen == list(ChangeEvent.objects.exclude(resource_type="agent_token")
                        .order_by("id").values_list("id", flat=True))
    assert rest["next_cursor"] == rest["events"][-1]["cursor"]


def test_diff_serves_exactly_what_the_change_event_serializer_describes(viewer_client, twin):
    touch(twin, 2)
    served = viewer_client.get("/diff").json()["events"]
    described = ChangeEventSerializer(ChangeEvent.objects.select_related("twin"), many=True)
    assert served == json.loads(json.dumps(described.data))


def test_events_carry_type_resource_operation_state_actor_and_twin(viewer_client, twin):
    touch(twin, actor="tester")
    event = viewer_client.get("/diff").json()["events"][0]
    assert event["type"] == "twin.updated" and event["operation"] == "updated"
    assert event["resource_type"] == "twin" and event["resource_id"] == str(twin.pk)
    assert event["actor"] == "tester" and event["twin"] == "plant"
    assert event["data"]["slug"] == "plant"


def test_an_unknown_cursor_is_410_with_resync_instructions(viewer_client, twin):
    touch(twin)
    for cursor in ["garbage!", encode_cursor(10_000_000)]:
        response = viewer_client.get("/diff", {"since": cursor})
        assert response.status_code == 410
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["resync"].endswith("/snapshot")
        assert response.json()["reason"] == "unknown"


def test_a_cursor_into_pruned_history_is_410_expired(viewer_client, twin):
    old = touch(twin, 3)
    ChangeEvent.objects.filter(id__in=old).update(
        created_at=ChangeEvent.objects.get(id=old[0]).created_at - timedelta(days=9))
    touch(twin)
    assert services.prune_feed(older_than=timedelta(days=7)) == 3
    response = viewer_client.get("/diff", {"since": encode_cursor(old[0])})
    assert response.status_code == 410 and response.json()["reason"] == "expired"
    assert viewer_client.get("/diff", {"since": encode_cursor(old[-1])}).status_code == 200


def test_diff_hides_twins_outside_the_callers_scope(client, django_user_model, twin):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    touch(twin)
    touch(other)
    user = django_user_model.objects.create_user("scoped", password="pw")
    assign_perm("twins.view_twin", user, twin)
    client.force_login(user)
    events = client.get("/diff").json()["events"]
    assert {e["twin"] for e in events} == {"plant"}


def test_diff_filters_by_type_and_twin_and_still_advances_the_cursor(viewer_client, twin):
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    touch(other, 2)
    mine = touch(twin)
    touch(other)
    page = viewer_client.get("/diff", {"twin": "plant", "types": "twin.updated"}).json()
    assert [e["id"] for e in page["events"]] == mine
    newest = ChangeEvent.objects.order_by("-id").first().id
    assert page["next_cursor"] == encode_cursor(newest)
    assert viewer_client.get("/diff", {"types": "proposal"}).json()["events"] == []


def test_diff_rejects_a_limit_above_the_maximum_with_a_problem(viewer_client):
    response = viewer_client.get("/diff", {"limit": 5000})
    assert response.status_code == 400
    assert "limit" in response.json()["errors"]


def test_diff_needs_authentication(client):
    response = client.get("/diff")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"


def test_cursors_round_trip_and_malformed_ones_are_refused(twin):
    (event_id,) = touch(twin)
    assert decode_cursor(encode_cursor(event_id)) == event_id
    assert decode_cursor("0") == 0
    for bad in ["djE6YWJj", "bm9wZQ", "%%%"]:  # v1:abc, "nope", not base64
        with pytest.raises(InvalidCursor):
            parse_cursor(bad)


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_excludes_changes_committed_after_its_cursor(users, twin, monkeypatch):
    """GIVEN a snapshot that has read its cursor, WHEN another transaction commits a new twin
    before the snapshot reads the twins, THEN the snapshot does not show that twin (one
    REPEATABLE READ snapshot) and /diff from the snapshot's cursor yields its creation."""
    cursor_read, committed = threading.Event(), threading.Event()
    original = views._state

    def paused(user, newest):
        cursor_read.set()
        committed.wait(10)
        return original(user, newest)

    def writer():
        cursor_read.wait(10)
        try:
            with transaction.atomic():
                late = Twin.objects.create(slug="late", name="Late")
                record_change(actor="test", action="twin.create", resource_type="twin",
                              resource_id=late.pk, operation="created", twin=late,
                              after=dict(TwinSerializer(late).data))
        finally:
            committed.set()
            connection.close()

    monkeypatch.setattr(views, "_state", paused)
    thread = threading.Thread(target=writer)
    thread.start()
    state = views.snapshot_state(users["viewer"])
    thread.join(10)
    assert [t["slug"] for t in state["twins"]] == ["plant"]
    later = ChangeEvent.objects.filter(id__gt=decode_cursor(state["cursor"]))
    assert [(e.type, e.data["slug"]) for e in later] == [("twin.created", "late")]


def test_the_snapshot_lists_state_with_the_cursor_of_the_newest_event(viewer_client, twin):
    (last,) = touch(twin)
    body = viewer_client.get("/snapshot").json()
    assert body["cursor"] == encode_cursor(last)
    assert [t["slug"] for t in body["twins"]] == ["plant"]


def _follow_diff(base: str, token: str, done: threading.Event, seen: list[int]) -> None:
    """Follow /diff over raw HTTP until writers are done and a page comes back empty."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    cursor = "0"
    while True:
        finished = done.is_set()
        conn.request("GET", "/diff?" + urlencode({"since": cursor, "limit": 50}),
                     headers=bearer(token))
        page = json.loads(conn.getresponse().read())
        seen.extend(e["id"] for e in page["events"])
        cursor = page["next_cursor"]
        if finished and not page["events"]:
            return


@pytest.mark.django_db(transaction=True)
def test_a_reader_following_diff_under_concurrent_writers_sees_every_event_once_in_order(
    aiw_server, twin, make_token
):
    """GIVEN 8 writers committing 30 changes each with random delays inside and between
    their transactions, WHEN a reader follows /diff over HTTP all along, THEN it sees every
    event exactly once and in id (commit) order."""
    token = make_token("viewer", rate="100000/min")  # it polls without pause: no 429 on a slow run
    done, seen = threading.Event(), []
    rng = random.Random(7)
    delays = [[(rng.uniform(0, 0.01), rng.uniform(0, 0.01)) for _ in range(30)]
              for _ in range(8)]

    def writer(plan):
        try:
            for before, inside in plan:
                time.sleep(before)
                with transaction.atomic():
                    touch(twin)
                    time.sleep(inside)  # commit late, holding the sequencing lock
        finally:
            connection.close()

    follower = threading.Thread(target=_follow_diff, args=(aiw_server, token, done, seen))
    writers = [threading.Thread(target=writer, args=(plan,)) for plan in delays]
    follower.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    follower.join(timeout=120)
    assert len(seen) == 240
    assert seen == sorted(set(seen))
    # every event the viewer may see (the token's own issue is twin-less: admins only)
    assert seen == list(ChangeEvent.objects.exclude(resource_type="agent_token")
                        .order_by("id").values_list("id", flat=True))
