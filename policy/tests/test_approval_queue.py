"""The approval queue (issue 15) and the overview's problem-first paging.

The queue lists pending proposals on the user's twins as cards, most urgent first (the
triggering anomaly's severity, then time to expiry), each with what a supervisor decides on and
only the buttons the user may press; the buttons post to the dashboard's ``act`` view, which
decides anyway and comes back to the queue.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policy.choices import ProposalStatus
from policy.models import Approval
from policy.selectors import PROBLEM_NONE, PROBLEM_SILENT, asset_states, assets_by_problem
from policy.tests import factories
from policy.tests.test_console_pages import anomaly, text_of
from tests.fixtures import grant_only
from twins.models import Asset, Twin
from twins.roles import grant_twin

pytestmark = pytest.mark.django_db

QUEUE = "/approvals/"
METRIC = "Volume Flow RateRMS"


@pytest.fixture(autouse=True)
def no_broker(settings):
    settings.MQTT_URL = None


def card(asset, *, severity: str | None = "high", expires_in_s: float = 1800, **fields):
    """A pending proposal as detection leaves it: triggered by an anomaly of ``severity``
    (None: proposed by hand), a simulation with a histogram and a constraint, a confidence
    breakdown and an interlock in its decision trace."""
    run = factories.simulation(asset, band=(120.0, 130.0), p_breach=0.078)
    run.result["metrics"][METRIC] |= {
        "histogram": {"edges": [118.0, 121.0, 124.0, 127.0, 130.0, 133.0],
                      "counts": [40, 260, 420, 230, 50]}}
    run.save()
    proposal = factories.proposal(asset, run=run, expires_in_s=expires_in_s, **fields)
    proposal.anomaly = anomaly(asset, severity, metric=METRIC, audited=False) if severity \
        else None
    proposal.confidence_breakdown = {
        "history": 0.61, "data_quality": 1.0, "simulation": 0.92, "consensus": 0.5,
        "weights": {"history": 0.25, "data_quality": 0.25, "simulation": 0.3,
                    "consensus": 0.2}, "detector_votes": {"smoothed_z": True, "mad": False}}
    proposal.decision_trace = [
        {"check": "policy", "passed": True, "detail": "v1 trusted"},
        {"check": "interlocks", "passed": True, "detail": "one interlock",
         "results": [{"id": "inlet-pressure", "passed": True,
                      "detail": "Pressure 1.0 < 2.5 (received 3 s ago)"}]}]
    proposal.save()
    return proposal


def order_on(html: str, proposals) -> list[int]:
    """The proposals' ids in the order their cards appear in ``html``."""
    return sorted((p.pk for p in proposals), key=lambda pk: html.index(f'id="proposal-{pk}"'))


def form_of(html: str, proposal, verb: str) -> str:
    """The ``<form>`` posting ``verb`` on ``proposal`` ("" when the page has none)."""
    start = html.find(f'action="/dashboard/proposals/{proposal.pk}/{verb}"')
    if start < 0:
        return ""
    return html[html.rindex("<form", 0, start):html.index("</form>", start)]


def test_the_queue_puts_critical_triggers_first_then_the_soonest_expiry(
        supervisor_client, pump):
    high_soon = card(pump, severity="high", expires_in_s=300)
    critical_late = card(pump, severity="critical", expires_in_s=3000)
    critical_soon = card(pump, severity="critical", expires_in_s=600)
    by_hand = card(pump, severity=None, expires_in_s=60)
    low = card(pump, severity="low", expires_in_s=120)
    html = supervisor_client.get(QUEUE).content.decode()
    assert order_on(html, [high_soon, critical_late, critical_soon, by_hand, low]) == [
        critical_soon.pk, critical_late.pk, high_soon.pk, low.pk, by_hand.pk]


def test_only_pending_proposals_of_the_users_twins_are_queued(viewer_client, pump, users):
    waiting = card(pump)
    done = card(pump, status=ProposalStatus.REJECTED)
    hidden = card(Asset.objects.create(
        twin=Twin.objects.create(slug="elsewhere", name="Elsewhere"), slug="p", name="P"))
    grant_only(users, pump.twin, roles=("viewer",))
    html = viewer_client.get(QUEUE).content.decode()
    assert f'id="proposal-{waiting.pk}"' in html
    assert f'id="proposal-{done.pk}"' not in html and f'id="proposal-{hidden.pk}"' not in html


def test_a_card_shows_what_the_supervisor_decides_on(supervisor_client, pump, users):
    proposal = card(pump, severity="critical", risk="HIGH", approvals_required=2,
                    expires_in_s=12 * 60 + 30)
    Approval.objects.create(proposal=proposal, approver=users["admin"], role="admin",
                            created_at=timezone.now(), expires_at=proposal.expires_at)
    response = supervisor_client.get(QUEUE)
    html, words = response.content.decode(), text_of(response)
    assert response.status_code == 200
    assert f"Critical spike on {METRIC}" in words  # the trigger: severity, kind, metric
    assert 'href="/twins/plant/pump-1/"' in html  # its asset's page
    assert "Risk High" in words and "Confidence 0.80" in words
    assert "1 more approval needed (1 of 2: admin-user)" in words
    assert re.search(r'Expires <time datetime="[^"]+">in 12 min \(\d{1,2} \w{3} \d{4}, '
                     r'\d\d:\d\d:\d\d UTC\)</time>', html)
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert "share of samples" in svg  # the y-axis
    assert 'class="limit"' in svg and "limit &gt; 130 · P(breach) 0.078" in svg
    assert "Limit Volume Flow RateRMS &gt; 130: P(breach) 0.078" in words
    for row in ("History 0.610 0.25", "Data quality 1.000 0.25", "Simulation 0.920 0.3",
                "Consensus 0.500 0.2"):
        assert row in words
    assert "Detector votes: mad ✘ · smoothed_z ✔" in words  # jsonb orders the keys
    assert "✔ pass: inlet-pressure Pressure 1.0 &lt; 2.5 (received 3 s ago)" in words


def test_a_viewer_sees_the_cards_without_buttons(viewer_client, pump):
    proposal = card(pump, risk="HIGH")
    html = viewer_client.get(QUEUE).content.decode()
    assert f'id="proposal-{proposal.pk}"' in html
    assert not form_of(html, proposal, "approve") and not form_of(html, proposal, "reject")
    assert "<textarea" not in html


def test_a_supervisor_who_may_only_view_the_twin_sees_no_buttons(django_user_model, pump):
    proposal = card(pump)
    user = django_user_model.objects.create_user(username="watching-supervisor", password="pw")
    user.groups.add(Group.objects.get(name="supervisor"))
    grant_twin(pump.twin, to=user, role="viewer")  # sees the plant, may not operate it
    client = Client()
    client.force_login(user)
    html = client.get(QUEUE).content.decode()
    assert f'id="proposal-{proposal.pk}"' in html and not form_of(html, proposal, "approve")


def test_a_supervisor_sees_approve_and_a_required_reason_to_reject(supervisor_client, pump):
    proposal = card(pump, risk="MEDIUM")
    html = supervisor_client.get(QUEUE).content.decode()
    approve, reject = form_of(html, proposal, "approve"), form_of(html, proposal, "reject")
    assert ">Approve</button>" in approve and "data-confirm" not in approve
    assert 'name="next" value="/approvals/"' in approve
    assert re.search(r'<textarea id="reject-reason-\d+" name="reason"[^>]* required', reject)
    assert f'<label for="reject-reason-{proposal.pk}">' in reject
    assert ">Reject</button>" in reject


def test_no_approve_button_for_the_proposer_a_second_approval_or_an_expired_one(
        supervisor_client, pump, users):
    """The approve service refuses all three (four eyes, one approval per approver, expiry):
    the card says why instead of offering the button; rejecting stays possible."""
    own = card(pump, proposed_by=users["supervisor"])
    late = card(pump, expires_in_s=-30)
    given = card(pump, approvals_required=2)
    Approval.objects.create(proposal=given, approver=users["supervisor"], role="supervisor",
                            created_at=timezone.now(), expires_at=given.expires_at)
    response = supervisor_client.get(QUEUE)
    html, words = response.content.decode(), text_of(response)
    assert not form_of(html, own, "approve") and form_of(html, own, "reject")
    assert not form_of(html, given, "approve") and form_of(html, given, "reject")
    assert "You proposed this: another approver must approve it (four eyes)." in words
    assert "You approved this; it waits for another approver." in words
    assert not form_of(html, late, "approve") and "Expired: it can no longer be approved" \
        in words


@pytest.mark.parametrize("risk", ["HIGH", "CRITICAL"])
def test_approving_high_and_critical_risk_asks_for_confirmation(supervisor_client, pump, risk):
    proposal = card(pump, risk=risk)
    approve = form_of(supervisor_client.get(QUEUE).content.decode(), proposal, "approve")
    assert f'data-confirm="Approve reduce_load (fraction: 0.1) on Pump 1? Risk is ' \
           f'{risk.lower()}."' in approve


def test_rejecting_without_a_reason_says_so_and_changes_nothing(supervisor_client, pump):
    proposal = card(pump)
    response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject",
                                      {"reason": " ", "next": QUEUE}, follow=True)
    assert response.redirect_chain == [(QUEUE, 302)]
    assert "a reason (at least 3 characters) is required to reject" in text_of(response)
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL and proposal.reason == ""


def test_rejecting_with_a_reason_from_the_queue_takes_the_card_off(supervisor_client, pump):
    proposal, other = card(pump), card(pump)
    response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject",
                                      {"reason": "pump is in maintenance", "next": QUEUE},
                                      follow=True)
    assert response.redirect_chain == [(QUEUE, 302)]
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.REJECTED
    assert proposal.reason == "pump is in maintenance"
    html = response.content.decode()
    assert f'id="proposal-{proposal.pk}"' not in html and f'id="proposal-{other.pk}"' in html


def test_a_supervisor_approves_from_the_queue_and_returns_to_it(
        trusted, supervisor_client, pump, users, django_capture_on_commit_callbacks):
    proposal = card(pump, proposed_by=users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/approve",
                                          {"next": f"{QUEUE}?page=1"})
    assert response.status_code == 302 and response["Location"] == f"{QUEUE}?page=1"
    proposal.refresh_from_db()
    assert proposal.decided_by == users["supervisor"]
    assert proposal.status == ProposalStatus.FAILED  # no broker: delivery failed, recorded


def test_a_forged_approval_by_a_viewer_is_403_and_changes_nothing(viewer_client, pump):
    proposal = card(pump)
    forged = viewer_client.post(f"/dashboard/proposals/{proposal.pk}/approve", {"next": QUEUE})
    assert forged.status_code == 403
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    assert not Approval.objects.filter(proposal=proposal).exists()


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/approvals/"])
def test_the_act_view_never_sends_anyone_off_site(supervisor_client, pump, target):
    proposal = card(pump)
    response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject",
                                      {"reason": "no", "next": target})
    assert response["Location"] == f"/dashboard/proposals/{proposal.pk}/"


def test_the_cards_fragment_answers_alone_with_the_feed_cursor(supervisor_client, pump):
    proposal = card(pump)
    page = supervisor_client.get(QUEUE).content.decode()
    assert 'data-fragment="approval_cards" data-live-types="proposal,anomaly,simulation"' \
        in page
    response = supervisor_client.get(f"{QUEUE}?page=1&fragment=approval_cards")
    html = response.content.decode()
    assert response.status_code == 200 and response["X-Feed-Cursor"]
    assert "<html" not in html and f'id="proposal-{proposal.pk}"' in html
    assert 'name="next" value="/approvals/?page=1"' in html  # the fragment's own URL not kept
    assert supervisor_client.get(f"{QUEUE}?fragment=nope").status_code == 404


def test_the_queue_pages_fifty_cards_at_a_time(supervisor_client, pump):
    made = [card(pump, severity=None, expires_in_s=600 + k) for k in range(52)]
    first = supervisor_client.get(QUEUE).content.decode()
    second = text_of(supervisor_client.get(f"{QUEUE}?page=2"))
    assert first.count('class="card approval-card') == 50
    assert second.count(" on Pump 1 ") == 2
    assert f"#{made[-1].pk} reduce_load" in second and "52 proposals waiting; 51–52 shown" \
        in second


def _plant(n: int) -> None:
    """``n`` pending proposals, each on an asset of its own twin, with an anomaly, a live
    approval and a simulation with a histogram."""
    from django.contrib.auth import get_user_model

    approver = get_user_model().objects.get(username="admin-user")
    for _ in range(n):
        twin = Twin.objects.create(slug=f"t-{uuid.uuid4().hex[:8]}", name="Another plant")
        asset = Asset.objects.create(twin=twin, slug="pump", name="Pump")
        proposal = card(asset, severity="critical", approvals_required=2)
        Approval.objects.create(proposal=proposal, approver=approver, role="admin",
                                created_at=timezone.now(), expires_at=proposal.expires_at)


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries.captured_queries)


@pytest.mark.parametrize("url", [QUEUE, f"{QUEUE}?fragment=approval_cards"])
def test_the_queue_runs_as_many_queries_for_30_proposals_as_for_3(supervisor_client, users,
                                                                   url):
    _plant(3)
    supervisor_client.get(url)  # warm caches (content types, permissions) outside the count
    small = _queries(supervisor_client, url)
    _plant(27)
    large = _queries(supervisor_client, url)
    assert supervisor_client.get(url).content.decode().count('class="card approval-card') == 30
    assert large == small, (small, large)


def test_the_home_queue_links_to_the_approval_queue(supervisor_client, pump):
    card(pump)
    html = supervisor_client.get("/?fragment=queue").content.decode()
    assert '<a href="/approvals/">Open the approval queue</a>' in html
    nav = supervisor_client.get("/").content.decode().split("</nav>")[0]
    assert '<a href="/approvals/">Approvals</a>' in nav


def test_the_overview_pages_problem_assets_first(supervisor_client, twin,
                                                  django_assert_max_num_queries):
    """GIVEN 150 assets whose last five by id and slug have problems (a critical and a high
    anomaly open, an action in flight, silent, and silent with a declared cadence), WHEN the
    overview's first page of 100 tiles is read, THEN it shows all five, worst first, and the
    second page none of them."""
    now = timezone.now()
    assets = Asset.objects.bulk_create(
        Asset(twin=twin, slug=f"a{k:03d}", name=f"Asset {k:03d}") for k in range(150))
    for asset in assets[:140]:
        factories.reading(asset, {"Pressure": 1.0}, ts=now - timedelta(seconds=2))
        factories.reading(asset, {"Pressure": 1.0}, ts=now - timedelta(seconds=1))
    critical, high, busy, silent, declared = assets[145:]
    anomaly(critical, "critical", audited=False)
    anomaly(high, "high", audited=False)
    factories.proposal(busy, status=ProposalStatus.EXECUTING)
    long_ago = now - timedelta(hours=1)
    for k in range(3):  # a reading a second, the last received an hour ago
        factories.reading(silent, {"Pressure": 1.0}, ts=long_ago + timedelta(seconds=k),
                          received_at=long_ago + timedelta(seconds=k))
    declared.metrics = [{"name": "Pressure", "cadence_seconds": 60}]
    declared.save()
    factories.reading(declared, {"Pressure": 1.0}, received_at=now - timedelta(minutes=6))
    with django_assert_max_num_queries(40):
        first = supervisor_client.get("/?fragment=plant").content.decode()
    second = supervisor_client.get("/?fragment=plant&plant=2").content.decode()
    shown = [int(pk) for pk in re.findall(r'data-asset="(\d+)"', first)]
    problems = [critical.pk, high.pk, busy.pk, silent.pk, declared.pk]
    assert len(shown) == 100 and shown[:5] == problems
    assert not set(problems) & {int(pk) for pk in re.findall(r'data-asset="(\d+)"', second)}
    assert "Assets 1–100 of 150" in text_of(supervisor_client.get("/?fragment=plant"))


def test_silence_in_sql_agrees_with_the_tiles(supervisor_client, users, twin):
    """The SQL rule that ranks silent assets (``assets_by_problem``) says what the tile says
    (``twins.state``) for live, silent, never-reporting and declared-cadence assets."""
    now = timezone.now()
    live, silent, never, declared_live, declared_silent = (
        Asset.objects.create(twin=twin, slug=s, name=s)
        for s in ("live", "silent", "never", "declared-live", "declared-silent"))
    for k in range(3):
        factories.reading(live, {"Pressure": 1.0}, ts=now - timedelta(seconds=3 - k))
        factories.reading(silent, {"Pressure": 1.0}, ts=now - timedelta(seconds=300 - k),
                          received_at=now - timedelta(seconds=300 - k))
    for asset, age_s in ((declared_live, 200), (declared_silent, 400)):
        asset.metrics = [{"name": "Pressure", "cadence_seconds": 60},
                         {"name": "Temperature", "cadence_seconds": 0}]
        asset.save()
        factories.reading(asset, {"Pressure": 1.0}, received_at=now - timedelta(seconds=age_s))
    ranks = {a.slug: a.problem for a in assets_by_problem(users["supervisor"], now=now)}
    tiles = {s.asset.slug: s for states in asset_states(users["supervisor"], now=now).values()
             for s in states}
    assert {slug: tiles[slug].silent for slug in ranks} == {
        "live": False, "silent": True, "never": False, "declared-live": False,
        "declared-silent": True}
    assert ranks == {"live": PROBLEM_NONE, "silent": PROBLEM_SILENT, "never": PROBLEM_NONE,
                     "declared-live": PROBLEM_NONE, "declared-silent": PROBLEM_SILENT}


def test_the_queue_needs_a_login(client, pump):
    card(pump)
    response = client.get(QUEUE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login")
