"""The supervisor console (issue 15): overview, anomalies, simulations and audit pages.

Each page is scoped through ``twins.scoping``: a user granted another twin sees nothing of
this one; viewers see no action buttons; texts are words, not machine codes.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from policy.choices import ProposalStatus
from policy.tests import factories
from telemetry.detection import serialize
from telemetry.models import Anomaly
from twins.audit_chain import write_anchor
from twins.ledger import record_change
from twins.models import Asset, Twin
from twins.roles import grant_twin

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(settings):
    settings.MQTT_URL = None


def anomaly(asset, severity="critical", status="open", metric="Pressure", audited=True):
    """An anomaly row, opened through record_change like detection does (feed + audit)."""
    from django.db import transaction

    now = timezone.now()
    with transaction.atomic():
        made = Anomaly.objects.create(
            asset=asset, metric=metric, detector="smoothed_z", kind="spike", severity=severity,
            score=0.97, status=status, started_at=now - timedelta(minutes=5), last_seen_at=now,
            n_points=3, features={"contributions": {metric: 1.0}})
        if audited:
            record_change(actor="detector", action="anomaly.open", resource_type="anomaly",
                          resource_id=made.pk, operation="created", twin=asset.twin,
                          after=serialize(made))
    return made


def text_of(response) -> str:
    """The page's visible text (tags stripped, whitespace collapsed)."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def other_twin_supervisor(django_user_model):
    """A supervisor granted only another twin: ``plant`` is outside their scope."""
    other = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    user = django_user_model.objects.create_user(username="far-supervisor", password="pw")
    user.groups.add(Group.objects.get(name="supervisor"))
    grant_twin(other, to=user, role="supervisor")
    client = Client()
    client.force_login(user)
    return client


def test_the_home_page_shows_each_asset_state_in_words(supervisor_client, pump, twin):
    quiet = Asset.objects.create(twin=twin, slug="pump-2", name="Quiet pump")
    silent = Asset.objects.create(twin=twin, slug="pump-3", name="Silent pump")
    start = timezone.now() - timedelta(seconds=30)
    factories.window(quiet, "Pressure", [1.0] * 5, start=start)
    long_ago = timezone.now() - timedelta(hours=1)
    for k in range(5):  # one reading a second, last received an hour ago
        factories.reading(silent, {"Pressure": 1.0}, ts=long_ago + timedelta(seconds=k),
                          received_at=long_ago + timedelta(seconds=k))
    anomaly(pump, "critical")
    page = text_of(supervisor_client.get("/"))
    assert "Pump 1 ▲ Anomalous: critical 1 critical open" in page
    assert "Quiet pump ✓ Normal" in page
    assert "Silent pump ‖ Silent" in page
    assert "1 critical 0 high 0 medium 0 low" in page


def test_the_home_page_never_says_nothing_waits_while_critical_anomalies_are_open(
        supervisor_client, pump):
    anomaly(pump, "critical")
    anomaly(pump, "critical", metric="Temperature")
    page = text_of(supervisor_client.get("/"))
    assert "No proposal waits for approval. But 2 critical anomalies are open" in page
    assert "Nothing waits for approval" not in page


def test_expired_proposals_stay_on_the_home_page_as_expired(supervisor_client, pump):
    overdue = factories.proposal(pump, expires_in_s=-60)  # the sweep has not run yet
    gone = factories.proposal(pump, status=ProposalStatus.EXPIRED, expires_in_s=-600)
    page = supervisor_client.get("/").content.decode()
    queue = page[page.index('id="queue-h"'):page.index('id="recent-h"')]
    assert f"#{overdue.pk}" in queue and f"#{gone.pk}" in queue
    assert queue.count('class="pill expired">Expired<') == 2
    assert "10 min ago" in queue


def test_the_queue_speaks_words_with_dates_and_readable_parameters(supervisor_client, pump):
    factories.proposal(pump, expires_in_s=1800)
    page = text_of(supervisor_client.get("/"))
    assert "fraction: 0.1" in page and "{'fraction'" not in page
    assert re.search(r"in 30 min \(\d{1,2} \w{3} \d{4}, \d\d:\d\d:\d\d UTC\)", page)
    assert "pending_approval" not in page
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", page)  # no microseconds


def test_the_queue_puts_the_most_severe_trigger_first(supervisor_client, pump):
    mild = factories.proposal(pump, expires_in_s=60)
    urgent = factories.proposal(pump, expires_in_s=3000)
    urgent.anomaly = anomaly(pump, "critical")
    urgent.save()
    page = supervisor_client.get("/?fragment=queue").content.decode()
    assert page.index(f"#{urgent.pk}<") < page.index(f"#{mild.pk}<")


def test_what_just_happened_lists_recent_audit_entries(supervisor_client, pump):
    made = anomaly(pump, "high")
    page = text_of(supervisor_client.get("/"))
    assert f"detector : anomaly.open anomaly #{made.pk} on plant" in page


def test_a_fragment_answers_alone_with_the_feed_cursor(supervisor_client, pump):
    response = supervisor_client.get("/?fragment=plant")
    assert response.status_code == 200
    assert response["X-Feed-Cursor"]
    assert "<html" not in response.content.decode() and "Pump 1" in response.content.decode()
    assert supervisor_client.get("/?fragment=nope").status_code == 404


def test_every_live_page_carries_the_feed_cursor_and_its_fragments(supervisor_client, pump):
    run = factories.simulation(pump)
    for url in ("/", "/anomalies/", "/simulations/", "/audit/", f"/sim/runs/{run.pk}/view",
                "/twins/plant/pump-1/"):
        page = supervisor_client.get(url).content.decode()
        assert 'data-feed-cursor="' in page, url
        assert "data-fragment=" in page, url
        assert "/static/console.js" in page, url


def test_the_asset_list_counts_open_anomalies_only_and_groups_by_twin(supervisor_client, pump):
    anomaly(pump, "high")
    anomaly(pump, "low", status="cleared")
    anomaly(pump, "medium", status="acknowledged")
    page = text_of(supervisor_client.get("/twins/"))
    assert "Test plant plant" in page
    assert "Pump 1 Pump Anomalous 1 : 1 high" in page


def test_the_anomaly_list_filters_by_status_severity_and_twin(supervisor_client, pump):
    critical = anomaly(pump, "critical")
    low = anomaly(pump, "low", status="cleared", metric="Temperature")
    page = supervisor_client.get("/anomalies/?status=open&severity=critical&twin=plant")
    body = page.content.decode()
    assert f"<td>{critical.pk}</td>" in body and f"<td>{low.pk}</td>" not in body
    assert "1 anomaly match" in text_of(page)
    everything = supervisor_client.get("/anomalies/").content.decode()
    assert f"<td>{low.pk}</td>" in everything


def test_a_supervisor_acknowledges_from_the_anomaly_list_and_returns_to_it(
        supervisor_client, pump):
    made = anomaly(pump, "critical")
    back = "/anomalies/?status=open"
    response = supervisor_client.post(f"/telemetry/anomalies/{made.pk}/acknowledge",
                                      {"comment": "valve checked", "next": back})
    assert response.status_code == 302 and response["Location"] == back
    made.refresh_from_db()
    assert made.status == "acknowledged" and made.ack_comment == "valve checked"


def test_acknowledging_never_redirects_off_site(supervisor_client, pump):
    made = anomaly(pump, "critical")
    response = supervisor_client.post(f"/telemetry/anomalies/{made.pk}/acknowledge",
                                      {"comment": "ok then", "next": "https://evil.example/"})
    assert response["Location"] == "/twins/plant/pump-1/"


@pytest.mark.parametrize("url", ["/anomalies/", "/twins/plant/pump-1/"])
def test_a_viewer_sees_no_acknowledge_button(viewer_client, supervisor_client, pump, url):
    anomaly(pump, "critical")
    assert "Acknowledge</button>" not in viewer_client.get(url).content.decode()
    assert "Acknowledge</button>" in supervisor_client.get(url).content.decode()


def test_the_simulation_list_shows_runs_in_words(supervisor_client, pump):
    run = factories.simulation(pump)
    page = supervisor_client.get("/simulations/")
    assert f'href="/sim/runs/{run.pk}/view"' in page.content.decode()
    assert "reduce_load fraction: 0.1" in text_of(page) and "Succeeded" in text_of(page)


def test_the_audit_page_verifies_the_chain_and_shows_the_newest_anchor(supervisor_client, pump):
    anomaly(pump, "high")
    anchor = write_anchor()
    page = text_of(supervisor_client.get("/audit/"))
    assert f"✔ Verified all {anchor.seq} entries" in page
    assert f"newest anchor: seq {anchor.seq}" in page
    assert "anomaly.open" in page


def test_the_audit_page_filters_by_action(supervisor_client, pump):
    anomaly(pump, "high")
    factories.proposal(pump)
    body = supervisor_client.get("/audit/?action=anomaly.open").content.decode()
    assert "anomaly.open" in body and "policy.accept" not in body


# (page, text that reveals the twin's contents) for a user granted only another twin.
SCOPED_PAGES = [
    ("/", "Pump 1"),
    ("/?fragment=queue", "reduce_load"),
    ("/twins/", "Pump 1"),
    ("/anomalies/", "Pressure"),
    ("/simulations/", "reduce_load"),
    ("/audit/", "anomaly.open"),
]


@pytest.mark.parametrize(("url", "secret"), SCOPED_PAGES)
def test_a_user_of_another_twin_sees_nothing_of_this_one(
        other_twin_supervisor, supervisor_client, pump, url, secret):
    anomaly(pump, "critical")
    factories.proposal(pump)
    assert secret in supervisor_client.get(url).content.decode()  # the secret is there
    response = other_twin_supervisor.get(url)
    assert response.status_code == 200
    assert secret not in response.content.decode()


@pytest.mark.parametrize(("url", "status"), [
    ("/twins/plant/pump-1/", 404),
    ("/twins/plant/pump-1/?fragment=anomalies", 404),
])
def test_pages_of_another_twin_are_404(other_twin_supervisor, pump, url, status):
    assert other_twin_supervisor.get(url).status_code == status


def test_an_outsider_cannot_acknowledge_an_anomaly_of_a_twin_not_granted(
        other_twin_supervisor, pump):
    made = anomaly(pump, "critical")
    response = other_twin_supervisor.post(f"/telemetry/anomalies/{made.pk}/acknowledge",
                                          {"comment": "not mine"})
    assert response.status_code == 404
    made.refresh_from_db()
    assert made.status == "open"


def test_pages_need_a_login(client):
    for url in ("/", "/anomalies/", "/simulations/", "/audit/", "/twins/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_manifest_is_json_even_for_a_browser(client):
    response = client.get("/.well-known/aiw-manifest.json",
                          HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["service"] == "OpsTwin"


def test_the_home_page_query_count_does_not_grow_with_assets(
        supervisor_client, twin, django_assert_max_num_queries):
    def add_assets(n):
        for _ in range(n):
            asset = Asset.objects.create(twin=twin, slug=uuid.uuid4().hex[:8], name="A")
            factories.reading(asset, {"Pressure": 1.0})
            anomaly(asset, "high", audited=False)
            factories.proposal(asset)

    add_assets(2)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        supervisor_client.get("/")
    add_assets(8)
    with django_assert_max_num_queries(len(small.captured_queries)):
        page = supervisor_client.get("/")
    assert page.content.decode().count('class="tile ') == 10


def test_the_proposal_page_reads_in_order_and_in_words(supervisor_client, pump):
    proposal = factories.proposal(pump, expires_in_s=1800)
    page = supervisor_client.get(f"/dashboard/proposals/{proposal.pk}/")
    body, words = page.content.decode(), text_of(page)
    headings = [body.index(f"<h2>{n}. ") for n in range(1, 7)]
    assert headings == sorted(headings)
    assert "Pending approval" in words and "pending_approval" not in words
    assert "Parameters: fraction: 0.1" in words
    assert re.search(r"Expires in 30 min \(\d{1,2} \w{3} \d{4}, \d\d:\d\d:\d\d UTC\)", words)
    reject = body[body.index(f'action="/dashboard/proposals/{proposal.pk}/reject"'):]
    form = reject[:reject.index("</form>")]
    assert 'name="reason"' in form and ">Reject</button>" in form  # the reason sits with Reject
    assert 'name="reason"' not in body[:body.index("Re-simulate")]


def test_a_viewer_sees_no_action_card_on_a_proposal(viewer_client, pump):
    proposal = factories.proposal(pump)
    body = viewer_client.get(f"/dashboard/proposals/{proposal.pk}/").content.decode()
    assert 'class="card actions"' not in body and "<button" not in body.split("</header>")[1]


def test_approving_a_high_risk_proposal_asks_for_confirmation(supervisor_client, pump):
    high = factories.proposal(pump, risk="HIGH")
    low = factories.proposal(pump, risk="LOW")
    assert "data-confirm=" in supervisor_client.get(f"/dashboard/proposals/{high.pk}/").content \
        .decode()
    assert "data-confirm=" not in supervisor_client.get(f"/dashboard/proposals/{low.pk}/") \
        .content.decode()


def test_the_proposal_fragment_renders_alone(supervisor_client, pump):
    proposal = factories.proposal(pump)
    response = supervisor_client.get(f"/dashboard/proposals/{proposal.pk}/?fragment=proposal")
    assert response["X-Feed-Cursor"] and "<html" not in response.content.decode()
    assert "Approve and execute" in response.content.decode()


def test_only_supervisors_and_admins_may_ask_for_a_chain_verification(
        viewer_client, supervisor_client, pump, monkeypatch):
    from policy import views

    anomaly(pump, "high")
    monkeypatch.setattr(views, "AUTO_VERIFY_MAX_ENTRIES", 0)  # a chain too long to auto-verify
    assert "Verified" not in text_of(viewer_client.get("/audit/?verify=1"))
    assert "Verify the chain now" not in viewer_client.get("/audit/").content.decode()
    assert "✔ Verified" in text_of(supervisor_client.get("/audit/?verify=1"))


def _tile(page: str, name: str) -> str:
    """The text of the tile of the asset called ``name`` on a rendered overview."""
    tiles = re.findall(r'<li class="tile [^"]*"[^>]*>.*?</li>', page, re.S)
    found = [t for t in tiles if f'<span class="tile-name">{name}</span>' in t]
    assert len(found) == 1, f"no single tile for {name}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found[0])).strip()


def test_a_tile_judges_silence_on_the_twin_models_receipt_time_not_on_telemetry_rows(
        supervisor_client, twin):
    """GIVEN an asset whose reported state (twins.state) was last received an hour ago, one
    reading a second, WHILE telemetry rows of it were stored just now without passing through
    ingest's reported state, THEN its tile says Silent with an icon and how long, and the tile
    carries the twin model's liveness; an asset that reported once (cadence unknown) says
    "Liveness unknown", one that never reported "No telemetry yet"."""
    silent = Asset.objects.create(twin=twin, slug="pump-3", name="Silent pump")
    once = Asset.objects.create(twin=twin, slug="pump-4", name="New pump")
    Asset.objects.create(twin=twin, slug="pump-5", name="Unwired pump")
    hour_ago = timezone.now() - timedelta(hours=1)
    factories.report(silent, [(hour_ago + timedelta(seconds=k), {"Pressure": 1.0})
                              for k in range(5)], hour_ago)
    factories.reading(once, {"Pressure": 1.0})
    from telemetry.models import TelemetryEvent
    TelemetryEvent.objects.create(event_id=uuid.uuid4(), asset=silent, ts=timezone.now(),
                                  source="replay", received_at=timezone.now())
    page = supervisor_client.get("/").content.decode()
    tile = _tile(page, "Silent pump")
    assert tile.startswith("Silent pump ‖ Silent silent: nothing received for 1 h")
    assert 'data-liveness="silent"' in page
    assert _tile(page, "New pump").startswith("New pump ? Liveness unknown")
    assert _tile(page, "Unwired pump").startswith("Unwired pump ○ No telemetry yet")


def test_a_tile_shows_the_delta_between_desired_and_reported_state(supervisor_client, pump):
    """GIVEN a command expected Pressure in 1.8…2.2 and its window passed, WHEN the asset
    reports 2.6 after it, THEN the tile names the metric as diverged with the wanted band,
    and the asset page says what was commanded and the same delta."""
    commanded = timezone.now() - timedelta(minutes=10)
    pump.desired = {"action": "reduce_load", "parameters": {"fraction": 0.1},
                    "commanded_at": commanded.isoformat(),
                    "converge_by": (commanded + timedelta(minutes=5)).isoformat(),
                    "expected": {"Pressure": [1.8, 2.2]}}
    pump.save()
    factories.window(pump, "Pressure", [2.6, 2.6, 2.6],
                     start=timezone.now() - timedelta(seconds=3))
    page = supervisor_client.get("/").content.decode()
    assert "Pressure diverged (wanted 1.8…2.2)" in _tile(page, "Pump 1")
    assert "✓ Normal" in _tile(page, "Pump 1")
    assert "live · last received" in _tile(page, "Pump 1")
    asset_page = text_of(supervisor_client.get("/twins/plant/pump-1/"))
    assert "Desired (last commanded) : reduce_load (fraction: 0.1)" in asset_page
    assert "Pressure: 2.6000, diverged (wanted 1.8 … 2.2)" in asset_page
    assert "✓ Live" in asset_page
    pump.desired["converge_by"] = (timezone.now() + timedelta(minutes=5)).isoformat()
    pump.save()
    converging = _tile(supervisor_client.get("/").content.decode(), "Pump 1")
    assert converging.startswith("Pump 1 ⟳ Action in flight Pressure converging")


def test_a_supervisor_who_may_only_view_a_twin_cannot_acknowledge_there(
        django_user_model, pump):
    made = anomaly(pump, "critical")
    user = django_user_model.objects.create_user(username="watching-supervisor", password="pw")
    user.groups.add(Group.objects.get(name="supervisor"))
    grant_twin(pump.twin, to=user, role="viewer")  # sees the plant, may not operate it
    client = Client()
    client.force_login(user)
    assert "Acknowledge</button>" not in client.get("/anomalies/").content.decode()
    client.post(f"/telemetry/anomalies/{made.pk}/acknowledge", {"comment": "not my plant"})
    made.refresh_from_db()
    assert made.status == "open"


def test_an_asset_with_a_generic_what_if_model_is_described_as_one(supervisor_client, twin):
    """GIVEN a traffic sensor (no physical model) whose what-if model is the generic one,
    WHEN its page is read, THEN the model card explains the generic model and its coverage,
    not the pump's regression."""
    from simulation.services import fit_whatif_model

    sensor = Asset.objects.create(twin=twin, slug="loop-7", name="Traffic loop 7",
                                  kind="generic", metrics=[{"name": "vehicles", "unit": "1/min"},
                                                           {"name": "occupancy", "unit": "%"}])
    start = timezone.now() - timedelta(hours=5)
    for k in range(240):
        factories.reading(sensor, {"vehicles": 20.0 + k % 7, "occupancy": 8.0 + k % 3},
                          ts=start + timedelta(minutes=k), received_at=start + timedelta(minutes=k))
    assert fit_whatif_model(sensor, rows=200).kind == "generic"
    page = text_of(supervisor_client.get("/twins/plant/loop-7/"))
    assert "A generic, data-driven model" in page and "90 % interval coverage" in page
    assert "SKAB pump model" not in page and "Driver" not in page
