"""The supervisors' story in a real browser (issue 15), two supervisors and a viewer at once.

GIVEN two supervisors with the overview open in headless Chromium, a viewer, a webhook
subscription of the first supervisor, and a signed policy that asks a human
WHEN an agent proposes an action (committed, as the policy engine leaves it)
THEN it appears in both supervisors' queues without a reload, and the webhook receives the
signed approval-needed notification;
WHEN the first supervisor opens it and presses "Approve and execute"
THEN the second supervisor's queue drops it without a reload;
AND the viewer's page of it has no approve button, and a POST forged from the viewer's page
(with its own CSRF token) gets 403 and changes nothing.

Screenshots (``$OPSTWIN_SCREENSHOT_DIR`` or the test's temporary directory): the queue with the
proposal, the proposal page, the queue after the approval.
"""

from __future__ import annotations

import os
import shutil

import pytest

from aiw.tests.conftest import live_server_process
from policy import services
from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.signing import public_key_b64
from policy.tests import factories
from policy.tests.receiver import Receiver
from policy.tests.test_notifications import SECRET, subscribe
from tests.test_browser_console import _browser, _login, _wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_browsers():
    first, second = _browser(), None
    try:
        second = _browser()
        yield first, second
    finally:
        first.quit()
        if second is not None:
            second.quit()


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


def _queue_text(driver) -> str:
    return driver.find_element("css selector", "section[data-fragment=queue]").text


def test_a_proposal_arrives_live_is_approved_and_leaves_the_other_supervisors_queue(
        two_browsers, pump, users, signing_key, receiver, django_user_model, tmp_path,
        settings):
    from tests.fixtures import make_user

    settings.PUBLIC_URL = "http://testserver"
    first, second = two_browsers
    other = make_user(django_user_model, "supervisor", "second-supervisor")
    factories.reading(pump)
    factories.signed_policy(pump.twin, signing_key, thresholds={"auto_execute": 0.999,
                                                                "approval": 0.0})
    subscribe(users["supervisor"], webhook=receiver.url, email=False)
    shots = tmp_path / "screenshots"
    shots = type(shots)(os.environ.get("OPSTWIN_SCREENSHOT_DIR") or shots)
    shots.mkdir(parents=True, exist_ok=True)
    env = {"POLICY_PUBLIC_KEYS": f"test:{public_key_b64(signing_key)}"}
    port = int(os.environ.get("OPSTWIN_BROWSER_TEST_PORT", "0")) or None
    with live_server_process(tmp_path / "web.log", extra_env=env, port=port) as base:
        for driver, user in ((first, users["supervisor"]), (second, other)):
            _login(driver, base, user)
            driver.get(base + "/")
            _wait_for(driver, lambda d: d.find_element("id", "live-status").text == "Live")
            assert "No proposal waits for approval" in _queue_text(driver)
            driver.execute_script("window.__sameDocument = true;")

        proposal = services.propose(asset=pump, action="reduce_load",
                                    parameters={"fraction": 0.1}, actor=users["agent"],
                                    simulation=factories.simulation(pump))
        assert proposal.status == ProposalStatus.PENDING_APPROVAL

        for driver in (first, second):
            _wait_for(driver, lambda d: f"#{proposal.pk}" in _queue_text(d))
            assert driver.execute_script("return window.__sameDocument === true;")
        first.save_screenshot(str(shots / "queue.png"))
        [hook] = [r for r in receiver.requests
                  if r.headers.get("x-opstwin-event") == "approval_needed"]
        assert hook.signature_ok and hook.json()["data"]["id"] == proposal.pk

        first.get(f"{base}/dashboard/proposals/{proposal.pk}/")
        first.save_screenshot(str(shots / "proposal-pending.png"))
        first.execute_script("window.confirm = function () { return true; };")
        first.find_element("css selector", "button.approve").click()
        _wait_for(first, lambda d: "approve done" in d.page_source)

        _wait_for(second, lambda d: f"#{proposal.pk}" not in _queue_text(d))
        assert second.execute_script("return window.__sameDocument === true;")
        second.save_screenshot(str(shots / "queue-after-approval.png"))
        assert Proposal.objects.get(pk=proposal.pk).status != ProposalStatus.PENDING_APPROVAL

        waiting = services.propose(asset=pump, action="reduce_load",
                                   parameters={"fraction": 0.05}, actor=users["agent"],
                                   simulation=factories.simulation(pump))
        second.delete_all_cookies()
        _login(second, base, users["viewer"])
        second.get(f"{base}/dashboard/proposals/{waiting.pk}/")
        assert not second.find_elements("css selector", "button.approve")
        status = second.execute_script("""
            const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken='));
            const form = new FormData();
            form.append('csrfmiddlewaretoken', token ? token.split('=')[1] :
                        (document.querySelector('[name=csrfmiddlewaretoken]') || {}).value);
            const xhr = new XMLHttpRequest();
            xhr.open('POST', arguments[0], false);
            xhr.setRequestHeader('X-CSRFToken', token ? token.split('=')[1] : '');
            xhr.send(form);
            return xhr.status;""", f"{base}/dashboard/proposals/{waiting.pk}/approve")
        assert status == 403
        assert Proposal.objects.get(pk=waiting.pk).status == ProposalStatus.PENDING_APPROVAL
    if os.environ.get("OPSTWIN_DOCS_SCREENSHOTS"):  # the README's current copies
        docs = settings.BASE_DIR / "docs" / "screenshots"
        for name in ("queue.png", "queue-after-approval.png"):
            shutil.copy(shots / name, docs / name)
