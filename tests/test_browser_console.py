"""The console in a real browser (issue 15): headless Debian Chromium against a live server.

GIVEN a supervisor's home page open in Chromium, following the change feed
WHEN an anomaly opens on an asset (a committed change, as detection would make it)
THEN its tile turns "Anomalous: critical" and the open-anomaly count rises, without a reload;
WHEN a silent asset reports again and the twin model publishes its ``asset.state``
THEN its tile turns "Normal" (live) in place, without a reload.

WHEN the page's WebSocket drops and an anomaly opens while it is down
THEN the page resumes from its cursor and shows it, without a reload.

Screenshots of the main pages (desktop, tablet and phone width) are saved as PNG artefacts in
``$OPSTWIN_SCREENSHOT_DIR`` (default: the test's temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from aiw.tests.conftest import live_server_process
from policy.choices import ProposalStatus
from policy.tests import factories
from telemetry.detection import serialize
from telemetry.models import Anomaly, TelemetryEvent, TelemetrySample
from tests.browser import (
    PHONE,
    TABLET,
    full_page_shot,
    mark_document,
    same_document,
    screenshot_dir,
    server_port,
    signed_in,
    wait_live,
)
from twins.ledger import record_change
from twins.models import Asset
from twins.state import publish_states

pytestmark = pytest.mark.django_db(transaction=True)


def _history(asset: Asset, n: int, start: datetime, spike_at: int, gap_after: int) -> None:
    """``n`` readings a second (sensor time), one spike, and an hour's hole after
    ``gap_after``; received just now, as a replay would be."""
    now, events, samples = timezone.now(), [], []
    for k in range(n):
        ts = start + timedelta(seconds=k) + (timedelta(hours=1) if k > gap_after else timedelta())
        events.append(TelemetryEvent(event_id=uuid.uuid4(), asset=asset, ts=ts, quality="good",
                                     source="replay", received_at=now))
        flow = 125 + (k % 17) / 10
        samples += [TelemetrySample(ts=ts, asset=asset, metric="Volume Flow RateRMS", value=flow),
                    TelemetrySample(ts=ts, asset=asset, metric="Pressure",
                                    value=9.0 if k == spike_at else 1.0 + (k % 7) / 100)]
    TelemetryEvent.objects.bulk_create(events)
    TelemetrySample.objects.bulk_create(samples)
    last = events[-1].ts  # the reported state ingest keeps of the newest readings
    factories.report(asset, [(last - timedelta(seconds=1), {"Pressure": 1.0}),
                             (last, {"Pressure": 1.0, "Volume Flow RateRMS": 125.0})], now)


def _open_anomaly(asset: Asset, severity: str = "critical") -> Anomaly:
    now = timezone.now()
    with transaction.atomic():
        made = Anomaly.objects.create(
            asset=asset, metric="Pressure", detector="smoothed_z", kind="spike",
            severity=severity, score=0.97, started_at=now - timedelta(minutes=2),
            last_seen_at=now, n_points=4, features={"contributions": {"Pressure": 1.0}})
        record_change(actor="detector", action="anomaly.open", resource_type="anomaly",
                      resource_id=made.pk, operation="created", twin=asset.twin,
                      after=serialize(made))
    return made


@pytest.fixture
def plant(pump, twin):
    """A small plant: a pump with history, a quiet normal asset, a silent one, a proposal
    waiting, one expired, one rolled back."""
    _history(pump, 1500, datetime(2020, 3, 1, tzinfo=UTC), spike_at=400, gap_after=900)
    valve = Asset.objects.create(twin=twin, slug="valve-1", name="Inlet valve")
    factories.window(valve, "Pressure", [1.0] * 5, start=timezone.now() - timedelta(minutes=5),
                     step_s=60)  # one reading a minute: silent only after ten minutes
    # One reading every ten minutes, declared: silent after 50 min without one.
    silent = Asset.objects.create(twin=twin, slug="pump-2", name="Standby pump", metrics=[
        {"name": "Pressure", "unit": "bar", "cadence_seconds": 600}])
    old = timezone.now() - timedelta(hours=2)
    for k in range(5):
        factories.reading(silent, {"Pressure": 1.0}, ts=old + timedelta(seconds=k),
                          received_at=old + timedelta(seconds=k))
    waiting = factories.proposal(pump, expires_in_s=1500, risk="HIGH")
    waiting.anomaly = _open_anomaly(pump, "high")
    waiting.save()
    factories.proposal(pump, status=ProposalStatus.EXPIRED, expires_in_s=-900)
    done = factories.proposal(pump, status=ProposalStatus.ROLLED_BACK)
    done.verification = {"metric": "Pressure", "outcome": "breached", "n": 20, "outside": 7}
    done.save()
    return {"pump": pump, "valve": valve, "standby": silent, "waiting": waiting}


def _tile(page, name: str):
    return page.locator("li.tile").filter(has_text=name)


def test_a_supervisors_home_page_shows_a_new_anomaly_without_reloading(
        browser, plant, users, tmp_path):
    shots = screenshot_dir(tmp_path)
    with live_server_process(tmp_path / "web.log", port=server_port()) as base:
        page = signed_in(browser, base, users["supervisor"])
        page.goto("/")
        wait_live(page)
        expect(_tile(page, "Inlet valve")).to_contain_text("Normal")
        mark_document(page)
        page.screenshot(path=str(shots / "overview.png"))

        _open_anomaly(plant["valve"], "critical")

        expect(_tile(page, "Inlet valve")).to_contain_text("Anomalous: critical")
        expect(page.locator("section.summary")).to_contain_text("1 critical")
        assert same_document(page)  # no reload
        page.screenshot(path=str(shots / "overview-live.png"))

        expect(_tile(page, "Standby pump")).to_contain_text("Silent")
        factories.reading(plant["standby"], {"Pressure": 1.02})
        assert publish_states() >= 1  # what Celery beat runs every second

        expect(_tile(page, "Standby pump")).to_contain_text("Normal")
        expect(_tile(page, "Standby pump")).to_contain_text("live · last received")
        assert same_document(page)
        _screenshots(browser, base, users["supervisor"], plant, shots)


def test_the_page_resumes_from_its_cursor_after_the_socket_drops(
        browser, plant, users, tmp_path):
    """GIVEN the home page following the feed over the WebSocket, having received an event,
    WHEN the socket drops and stays down while another anomaly opens, THEN the page reconnects
    from the cursor of the last event it received and shows the new anomaly, without a
    reload."""
    sockets, frames, down = [], [], {"now": False}

    def through_playwright(socket):  # the page's sockets, relayed unless "down"
        sockets.append(socket)
        if down["now"]:
            socket.close(code=1012, reason="test: server restarting")
            return
        server = socket.connect_to_server()

        def relay(message):
            frames.append(json.loads(message))
            socket.send(message)
        server.on_message(relay)

    with live_server_process(tmp_path / "web.log", port=server_port()) as base:
        page = signed_in(browser, base, users["supervisor"])
        page.route_web_socket(re.compile(r"/ws/feed"), through_playwright)
        page.goto("/")
        wait_live(page)
        mark_document(page)
        _open_anomaly(plant["valve"], "high")
        expect(_tile(page, "Inlet valve")).to_contain_text("Anomalous: high")
        last = [f for f in frames if f.get("cursor")][-1]["cursor"]

        down["now"] = True
        sockets[0].close(code=1012, reason="test: server restarting")
        expect(page.locator("#live-status")).to_contain_text("Reconnecting")
        _open_anomaly(plant["valve"], "critical")
        down["now"] = False

        expect(_tile(page, "Inlet valve")).to_contain_text("Anomalous: critical")
        wait_live(page)
        assert same_document(page)
        since = [parse_qs(urlsplit(s.url).query)["since"][0] for s in sockets[1:]]
        assert since and set(since) == {last}  # every reconnect resumed after that event


def test_a_run_page_follows_its_run_without_polling(browser, pump, users, tmp_path):
    """GIVEN the page of a queued run, WHEN the run is cancelled elsewhere, THEN the page shows
    it cancelled without a reload, and it never fetched the run's JSON endpoint."""
    from simulation.services import cancel_run
    from simulation.tests.factories import stored_run

    run = stored_run(pump, created_by=users["supervisor"])
    with live_server_process(tmp_path / "web.log", port=server_port()) as base:
        page = signed_in(browser, base, users["supervisor"])
        page.goto(f"/sim/runs/{run.pk}/view")
        wait_live(page)
        mark_document(page)
        expect(page.locator("#sim-status")).to_have_text("Queued")

        cancel_run(run.pk, actor=users["supervisor"])

        expect(page.locator("#sim-status")).to_have_text("Cancelled")
        assert same_document(page)
        fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert not [url for url in fetched if url.endswith(f"/sim/runs/{run.pk}")]


def test_the_approval_queue_works_from_the_keyboard_at_tablet_width(
        browser, plant, pump, users, tmp_path):
    """GIVEN the approval queue at tablet width with a HIGH-risk proposal and another one
    waiting, WHEN a supervisor tabs to Approve and presses Enter, THEN the confirmation names
    the risk, and accepting it approves the proposal and brings the queue back without it;
    WHEN they type a reason and press Enter on Reject for the other, THEN it is rejected with
    that reason. Nothing on the page is wider than the screen."""
    other = factories.proposal(pump, expires_in_s=3000)
    shots = screenshot_dir(tmp_path)
    with live_server_process(tmp_path / "web.log", port=server_port()) as base:
        page = signed_in(browser, base, users["supervisor"], viewport=TABLET)
        page.goto("/approvals/")
        wait_live(page)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(shots / "approvals-tablet.png"), full_page=True)
        waiting = plant["waiting"]
        card = page.locator(f"#proposal-{waiting.pk}")
        approve = card.get_by_role("button", name="Approve")
        page.keyboard.press("Tab")
        for _ in range(200):  # keyboard only: tab until the card's Approve has the focus
            if approve.evaluate("button => document.activeElement === button"):
                break
            page.keyboard.press("Tab")
        else:
            pytest.fail("Approve cannot be reached with the Tab key")
        questions = []
        page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
        page.keyboard.press("Enter")
        expect(page.locator(f"#proposal-{waiting.pk}")).to_have_count(0)
        assert questions and "Risk is high" in questions[0]
        waiting.refresh_from_db()
        assert waiting.status != ProposalStatus.PENDING_APPROVAL

        reason = page.locator(f"#reject-reason-{other.pk}")
        reason.focus()
        page.keyboard.type("pressure already falling")
        page.keyboard.press("Tab")  # to Reject
        page.keyboard.press("Enter")
        expect(page.locator(f"#proposal-{other.pk}")).to_have_count(0)
        other.refresh_from_db()
        assert other.status == ProposalStatus.REJECTED


def test_asset_charts_extend_and_progress_bars_move_without_reloading(
        browser, pump, users, tmp_path):
    """GIVEN an asset page on its last hour and the simulation list with a running run, WHEN
    the asset reports a newer reading (its asset.state published) and the run writes its
    progress, THEN the chart's newest point moves to that reading and the bar reads
    "50 % (500 / 1,000 samples)", both without a reload."""
    from simulation.models import SimulationStatus
    from simulation.services.progress import ProgressWriter
    from simulation.tests.factories import stored_run

    now = timezone.now().replace(microsecond=0)
    factories.window(pump, "Pressure", [1.0 + (k % 5) / 100 for k in range(60)],
                     start=now - timedelta(minutes=10), step_s=10)
    publish_states()
    run = stored_run(pump, created_by=users["supervisor"], status=SimulationStatus.RUNNING)
    with live_server_process(tmp_path / "web.log", port=server_port()) as base:
        chart = signed_in(browser, base, users["supervisor"])
        chart.goto("/twins/plant/pump-1/?range=1h")
        wait_live(chart)
        mark_document(chart)
        figure = chart.locator('figure[data-metric="Pressure"]')
        before = float(figure.get_attribute("data-last-ts"))
        runs = signed_in(browser, base, users["supervisor"])
        runs.goto("/simulations/")
        wait_live(runs)
        mark_document(runs)

        newest = now + timedelta(seconds=5)
        factories.reading(pump, {"Pressure": 1.3}, ts=newest)
        assert publish_states() >= 1
        ProgressWriter(run.pk, 0.0, twin=pump.twin)(500, 1000)

        expect(figure).to_have_attribute("data-last-ts", re.compile(r"\d"))
        chart.wait_for_function(
            "([t]) => Number(document.querySelector('figure[data-metric=\"Pressure\"]')"
            ".getAttribute('data-last-ts')) >= t", arg=[newest.timestamp()])
        assert float(figure.get_attribute("data-last-ts")) > before
        expect(runs.locator(f'.run-progress[data-run="{run.pk}"]')).to_contain_text(
            "50 % (500 / 1,000 samples)")
        assert same_document(chart) and same_document(runs)


def _screenshots(browser, base: str, user, plant: dict, shots: Path) -> None:
    """The main pages as a person sees them (artefacts, and docs/ when asked), at desktop,
    tablet and phone width; on a phone and a tablet the Review button stays on screen."""
    page = signed_in(browser, base, user)
    pages = {"asset": "/twins/plant/pump-1/?range=all", "anomalies": "/anomalies/",
             "audit": "/audit/", "simulations": "/simulations/",
             "proposal": f"/dashboard/proposals/{plant['waiting'].pk}/"}
    for name, url in pages.items():
        page.goto(url)
        page.wait_for_load_state("load")
        full_page_shot(page, shots / f"{name}.png")
    for name, viewport in (("phone", PHONE), ("tablet", TABLET)):
        small = signed_in(browser, base, user, viewport=viewport)
        small.goto("/")
        small.wait_for_load_state("load")
        small.screenshot(path=str(shots / f"overview-{name}.png"))
        review = small.get_by_role("link", name="Review").first
        review.wait_for()
        box = review.bounding_box()
        assert box is not None and box["x"] + box["width"] <= viewport["width"]  # on screen
    if os.environ.get("OPSTWIN_DOCS_SCREENSHOTS"):
        docs = Path(settings.BASE_DIR) / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, docs / png.name)
