"""The supervisors' story in a real browser, from telemetry to verification (issue 15).

GIVEN two supervisors with the overview open in headless Chromium (Playwright), a simulated
pump that answers commands over MQTT, a webhook subscription of the first supervisor, and a
signed policy that asks a human
WHEN the pump's telemetry steps out of its normal range (ingested as the MQTT subscriber does)
THEN detection opens an anomaly, the what-if and the policy make a proposal, it appears in both
supervisors' queues without a reload, and the webhook receives the signed approval-needed
notification;
WHEN the first supervisor opens it from the queue with the keyboard and approves it (the
confirmation step of a HIGH risk accepted)
THEN the second supervisor's queue drops it without a reload, and the first supervisor's page
shows it executed (the pump acknowledged the command) and, once the verification window's
telemetry is in, verified: all without a reload;
AND a viewer's page of a waiting proposal has no approve button, and a POST forged from the
viewer's page (with its own CSRF token) gets 403 and changes nothing.

Screenshots (``$OPSTWIN_SCREENSHOT_DIR`` or the test's temporary directory) of the queue with the
proposal, the proposal page before and after, and the queue after the approval.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils.dateparse import parse_datetime
from playwright.sync_api import expect

from aiw.tests.conftest import live_server_process
from demo.device import SimulatedDevice
from opstwin_site.broker import EmbeddedBroker
from policy import services
from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.signing import public_key_b64
from policy.tests import factories
from policy.tests.receiver import Receiver
from policy.tests.test_notifications import SECRET, subscribe
from tests.browser import (
    mark_document,
    same_document,
    screenshot_dir,
    server_port,
    signed_in,
    wait_live,
)
from tests.fixtures import _reachable, ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker_url():
    """This machine's broker (``MQTT_URL``), else the embedded one the newcomer's demo uses."""
    url = os.environ.get("MQTT_URL")
    if url and _reachable(url, 1883):
        yield url
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = EmbeddedBroker(port=port)
    yield broker.start()
    broker.stop()


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


def _queue(page):
    return page.locator("section[data-fragment=queue]")


def _observe(proposal: Proposal) -> None:
    """The verification window's readings, inside the simulated band, then one past its end
    (sensor time, as the pump would report them)."""
    plan = proposal.verification
    low, high = plan["band"]
    start = parse_datetime(plan["from_ts"])
    middle = (low + high) / 2
    values = [middle + (high - low) * 0.1 * ((k % 3) - 1) for k in range(plan["min_samples"] + 5)]
    factories.window(proposal.asset, plan["metric"], values, start=start + timedelta(seconds=1))
    factories.reading(proposal.asset, {plan["metric"]: middle},
                      ts=start + timedelta(seconds=plan["window_s"] + 1))


def test_telemetry_to_a_verified_action_live_in_two_supervisors_browsers(
        migrated_rows, browser, pump, users, receiver, broker_url, django_user_model, tmp_path,
        settings):
    from tests.fixtures import make_user

    key = Ed25519PrivateKey.generate()
    prefix = f"story{uuid.uuid4().hex[:8]}"
    settings.POLICY_PUBLIC_KEYS = {"test": public_key_b64(key)}
    settings.POLICY_DEV_KEY_DIR = None
    settings.POLICY_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    settings.PUBLIC_URL = "http://testserver"
    settings.NOTIFICATION_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.MQTT_URL, settings.MQTT_TOPIC_PREFIX = broker_url, prefix
    settings.SIMULATION_SAMPLES = 2000
    other = make_user(django_user_model, "supervisor", "second-supervisor")
    factories.signed_policy(pump.twin, key, thresholds={"auto_execute": 0.999, "approval": 0.0})
    subscribe(users["supervisor"], webhook=receiver.url, email=False)
    shots = screenshot_dir(tmp_path)
    server_env = {  # the web process executes the approved command itself (no worker here)
        "POLICY_PUBLIC_KEYS": f"test:{public_key_b64(key)}", "MQTT_URL": broker_url,
        "MQTT_TOPIC_PREFIX": prefix, "CELERY_TASK_ALWAYS_EAGER": "1",
        "POLICY_AUDIT_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
        "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    device = SimulatedDevice(broker_url, pump.twin.slug).start()
    try:
        with live_server_process(tmp_path / "web.log", extra_env=server_env,
                                 port=server_port()) as base:
            first = signed_in(browser, base, users["supervisor"])
            second = signed_in(browser, base, other)
            for page in (first, second):
                page.goto("/")
                wait_live(page)
                expect(_queue(page)).to_contain_text("No proposal waits for approval")
                mark_document(page)

            matrix = normal_pump_matrix(500)
            matrix[450:, 3] += 0.5  # the pump's pressure steps up
            ingest_matrix(pump, matrix)

            proposal = Proposal.objects.get(asset=pump)  # one open proposal an asset
            assert proposal.anomaly.metric == "Pressure"
            assert proposal.status == ProposalStatus.PENDING_APPROVAL, proposal.decision_trace
            for page in (first, second):
                expect(_queue(page)).to_contain_text(f"#{proposal.pk}")
                assert same_document(page)
            first.screenshot(path=str(shots / "queue.png"))
            [hook] = [r for r in receiver.requests
                      if r.headers.get("x-opstwin-event") == "approval_needed"]
            assert hook.signature_ok and hook.json()["data"]["id"] == proposal.pk

            queue_page = signed_in(browser, base, other)
            queue_page.goto("/approvals/")
            expect(queue_page.locator(f"#proposal-{proposal.pk}")).to_contain_text("P(breach)")
            queue_page.screenshot(path=str(shots / "approvals.png"), full_page=True)
            queue_page.close()

            link = _queue(first).get_by_role("link", name=f"#{proposal.pk}", exact=True)
            link.focus()
            first.keyboard.press("Enter")  # keyboard operable: no mouse needed
            first.wait_for_url(f"**/dashboard/proposals/{proposal.pk}/")
            wait_live(first)
            mark_document(first)
            first.screenshot(path=str(shots / "proposal-pending.png"), full_page=True)
            questions = []
            first.once("dialog", lambda dialog: (questions.append(dialog.message),
                                                 dialog.accept()))
            first.get_by_role("button", name="Approve and execute").click()

            expect(_queue(second)).not_to_contain_text(f"#{proposal.pk}")
            assert same_document(second)
            second.screenshot(path=str(shots / "queue-after-approval.png"))

            status = first.locator("#proposal-status")
            expect(status).to_have_text("Verifying")  # the pump acknowledged the command
            mark_document(first)
            proposal.refresh_from_db()
            assert proposal.execution["acknowledged"] and device.applied
            _observe(proposal)
            assert services.verify_proposal(proposal.pk).status == ProposalStatus.VERIFIED
            expect(status).to_have_text("Verified")
            assert same_document(first)
            first.screenshot(path=str(shots / "proposal-verified.png"), full_page=True)
            if proposal.risk_level in ("HIGH", "CRITICAL"):
                assert questions and "Approve" in questions[0]

            waiting = services.propose(asset=pump, action="reduce_load",
                                       parameters={"fraction": 0.05}, actor=users["agent"],
                                       simulation=factories.simulation(pump))
            viewer = signed_in(browser, base, users["viewer"])
            viewer.goto(f"/dashboard/proposals/{waiting.pk}/")
            expect(viewer.get_by_role("heading", level=1)).to_contain_text(f"#{waiting.pk}")
            assert viewer.get_by_role("button", name="Approve and execute").count() == 0
            forged = viewer.evaluate("""async (url) => {
                const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken='));
                const value = token ? token.split('=')[1] :
                    (document.querySelector('[name=csrfmiddlewaretoken]') || {}).value;
                const form = new FormData();
                form.append('csrfmiddlewaretoken', value);
                const response = await fetch(url, {method: 'POST', body: form,
                    headers: {'X-CSRFToken': value}, credentials: 'same-origin'});
                return response.status;
            }""", f"{base}/dashboard/proposals/{waiting.pk}/approve")
            assert forged == 403
            waiting.refresh_from_db()
            assert waiting.status == ProposalStatus.PENDING_APPROVAL
    finally:
        device.stop()
    if os.environ.get("OPSTWIN_DOCS_SCREENSHOTS"):  # the README's current copies
        docs = settings.BASE_DIR / "docs" / "screenshots"
        for name in ("queue.png", "approvals.png", "queue-after-approval.png",
                     "proposal-verified.png"):
            shutil.copy(shots / name, docs / name)
