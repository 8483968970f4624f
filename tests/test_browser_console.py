"""The console in a real browser (issue 15): headless Debian Chromium against a live server.

GIVEN a supervisor's home page open in Chromium, following the change feed
WHEN an anomaly opens on an asset (a committed change, as detection would make it)
THEN its tile turns "Anomalous: critical" and the open-anomaly count rises, without a reload;
WHEN a silent asset reports again and the twin model publishes its ``asset.state``
THEN its tile turns "Normal" (live) in place, without a reload.

Screenshots of the main pages (desktop and phone width) are saved as PNG artefacts in
``$OPSTWIN_SCREENSHOT_DIR`` (default: the test's temporary directory).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.utils import timezone

from aiw.tests.conftest import live_server_process
from policy.choices import ProposalStatus
from policy.tests import factories
from telemetry.detection import serialize
from telemetry.models import Anomaly, TelemetryEvent, TelemetrySample
from tests.fixtures import missing
from twins.ledger import record_change
from twins.models import Asset
from twins.state import publish_states

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.django_db(transaction=True)


def _browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing("Debian's chromium and chromium-driver are not installed "
                "(apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture
def browser():
    driver = _browser()
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("OPSTWIN_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


def _login(driver, base: str, user) -> None:
    client = Client()
    client.force_login(user)
    driver.get(base + "/accounts/login/")
    driver.add_cookie({"name": settings.SESSION_COOKIE_NAME,
                       "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "path": "/"})


def _wait_for(driver, condition, timeout: float = 30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A fragment swapped in while the condition reads it leaves a stale element: read again.
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition)


def _tile_text(driver, name: str) -> str:
    from selenium.webdriver.common.by import By

    for tile in driver.find_elements(By.CSS_SELECTOR, "li.tile"):
        if name in tile.text:
            return tile.text
    return ""


def test_a_supervisors_home_page_shows_a_new_anomaly_without_reloading(
        browser, plant, users, tmp_path, shots):
    port = int(os.environ.get("OPSTWIN_BROWSER_TEST_PORT", "0")) or None
    with live_server_process(tmp_path / "web.log", port=port) as base:
        _login(browser, base, users["supervisor"])
        browser.get(base + "/")
        _wait_for(browser, lambda d: d.find_element("id", "live-status").text == "Live")
        _wait_for(browser, lambda d: "Normal" in _tile_text(d, "Inlet valve"))
        browser.execute_script("window.__sameDocument = true;")
        browser.save_screenshot(str(shots / "overview.png"))

        _open_anomaly(plant["valve"], "critical")

        _wait_for(browser, lambda d: "Anomalous: critical" in _tile_text(d, "Inlet valve"))
        assert browser.execute_script("return window.__sameDocument === true;")  # no reload
        _wait_for(browser, lambda d: "1 critical" in d.find_element(
            "css selector", "section.summary").text)
        browser.save_screenshot(str(shots / "overview-live.png"))

        assert "Silent" in _tile_text(browser, "Standby pump")
        factories.reading(plant["standby"], {"Pressure": 1.02})
        assert publish_states() >= 1  # what Celery beat runs every second

        _wait_for(browser, lambda d: "Normal" in _tile_text(d, "Standby pump"))
        assert "live · last received" in _tile_text(browser, "Standby pump")
        assert browser.execute_script("return window.__sameDocument === true;")
        _screenshots(browser, base, plant, shots)


def test_a_run_page_follows_its_run_without_polling(browser, pump, users, tmp_path):
    """GIVEN the page of a queued run, WHEN the run is cancelled elsewhere, THEN the page shows
    it cancelled without a reload, and it never fetched the run's JSON endpoint."""
    from simulation.models import SimulationRun, SimulationStatus
    from simulation.services import cancel_run

    run = SimulationRun.objects.create(asset=pump, status=SimulationStatus.QUEUED, seed=1,
                                       request={"action": "reduce_load",
                                                "parameters": {"fraction": 0.1}},
                                       created_by=users["supervisor"])
    port = int(os.environ.get("OPSTWIN_BROWSER_TEST_PORT", "0")) or None
    with live_server_process(tmp_path / "web.log", port=port) as base:
        _login(browser, base, users["supervisor"])
        browser.get(f"{base}/sim/runs/{run.pk}/view")
        _wait_for(browser, lambda d: d.find_element("id", "live-status").text == "Live")
        browser.execute_script("window.__sameDocument = true;")
        assert browser.find_element("id", "sim-status").text == "Queued"

        cancel_run(run.pk, actor=users["supervisor"])

        _wait_for(browser, lambda d: d.find_element("id", "sim-status").text == "Cancelled")
        assert browser.execute_script("return window.__sameDocument === true;")
        fetched = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
        assert not [url for url in fetched if url.endswith(f"/sim/runs/{run.pk}")]


def _screenshots(driver, base: str, plant: dict, shots: Path) -> None:
    """The main pages as a person sees them (artefacts, and docs/ when asked)."""
    pages = {"asset": "/twins/plant/pump-1/?range=all", "anomalies": "/anomalies/",
             "audit": "/audit/", "simulations": "/simulations/",
             "proposal": f"/dashboard/proposals/{plant['waiting'].pk}/"}
    for name, url in pages.items():
        driver.get(base + url)
        _wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete")
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(max(height + 40, 800), 3000))
        driver.save_screenshot(str(shots / f"{name}.png"))
    driver.set_window_size(390, 1400)
    driver.get(base + "/")
    driver.save_screenshot(str(shots / "overview-phone.png"))
    # Find and measure in one script: a live fragment swap between two WebDriver calls would
    # leave a stale element behind.
    measure = ("const a = [...document.querySelectorAll('a')]"
               ".find(e => e.textContent.trim() === 'Review'); "
               "return a ? [a.getBoundingClientRect().right, window.innerWidth] : null;")
    _wait_for(driver, lambda d: d.execute_script(measure) is not None)
    right, width = driver.execute_script(measure)
    assert right <= width  # on screen
    if os.environ.get("OPSTWIN_DOCS_SCREENSHOTS"):
        docs = Path(settings.BASE_DIR) / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, docs / png.name)
