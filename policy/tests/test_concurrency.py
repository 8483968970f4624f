"""Exactly once under real concurrency: simultaneous HTTP requests against a live server.

The server is pytest-django's live server (Django's threaded test server) on the test
database; each request thread has its own PostgreSQL connection, so the races are the real ones (row
locks, conditional UPDATEs), not simulated.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from aiw.services import issue_token
from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_url(live_server) -> str:
    """pytest-django's live server (a threaded server on the test database)."""
    return live_server.url


def at_once(*calls) -> list[int]:
    """Run the HTTP calls released together by a barrier; their status codes, sorted."""
    barrier, codes = threading.Barrier(len(calls)), []

    def run(call):
        barrier.wait()
        codes.append(call())

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return sorted(codes)


def post(url: str, user):
    """A POST as ``user`` with a bearer agent token of theirs, returning the status code."""
    token = issue_token(user=user, name=f"{user.get_username()}-concurrency",
                        scopes=["read", "write"])[1]
    request = urllib.request.Request(url, data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})

    def call() -> int:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    return call


def commands_sent(proposal) -> int:
    return AuditEntry.objects.filter(resource_type="proposal", resource_id=str(proposal.pk),
                                     action="proposal.execute").count()


def test_two_supervisors_approving_at_once_execute_once(
        live_url, trusted, pump, users, second_supervisor, device):
    """GIVEN a pending proposal, WHEN two supervisors approve it in the same instant, THEN one
    wins, the other gets 409, and the asset receives exactly one command."""
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    url = f"{live_url}/proposals/{proposal.pk}/approve"
    codes = at_once(post(url, users["supervisor"]), post(url, second_supervisor))
    assert codes == [200, 409]
    assert commands_sent(proposal) == 1
    assert len(device.received) == 1
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.VERIFYING


def test_an_executor_clicking_twice_executes_once(live_url, trusted, pump, users, device):
    """One click is accepted (202: claimed, command queued; eager Celery sends it inline),
    the others are refused (409), and the asset receives one command."""
    proposal = factories.approved(pump, users["supervisor"])
    url = f"{live_url}/proposals/{proposal.pk}/execute"
    codes = at_once(post(url, users["executor"]), post(url, users["executor"]),
                    post(url, users["admin"]))
    assert codes == [202, 409, 409]
    assert commands_sent(proposal) == 1
    assert len(device.received) == 1


def test_two_approvals_of_a_critical_action_at_once_execute_it_once(
        live_url, trusted, pump, users, second_supervisor, device):
    """Both approvals count (two distinct approvers), and the second one to commit approves
    and executes: one command."""
    proposal = factories.proposal(pump, action="emergency_stop", risk="CRITICAL",
                                  approvals_required=2, proposed_by=users["agent"],
                                  rollback_action="")
    url = f"{live_url}/proposals/{proposal.pk}/approve"
    codes = at_once(post(url, users["supervisor"]), post(url, second_supervisor))
    assert codes == [200, 200]
    assert proposal.approvals.count() == 2
    assert commands_sent(proposal) == 1
    assert [c["ack"]["command_id"] for c in device.received] == [f"proposal-{proposal.pk}"]
