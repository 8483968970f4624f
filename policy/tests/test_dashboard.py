"""The supervisor dashboard: pending proposals with evidence, approve and reject."""

from __future__ import annotations

import pytest

from policy.choices import ProposalStatus
from policy.tests.test_workflow import make_proposal

pytestmark = pytest.mark.django_db


def test_the_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_supervisor_sees_pending_proposals(supervisor_client, pump, users):
    proposal = make_proposal(pump, proposed_by=users["agent"])
    page = supervisor_client.get("/").content.decode()
    assert f"/dashboard/proposals/{proposal.pk}/" in page
    assert "reduce_load" in page
    detail = supervisor_client.get(f"/dashboard/proposals/{proposal.pk}/").content.decode()
    assert "Approve and execute" in detail
    assert "Decision trace" in detail


def test_a_supervisor_approves_through_the_dashboard(
    supervisor_client, pump, users, settings, django_capture_on_commit_callbacks
):
    settings.MQTT_URL = None  # the command outcome is covered in test_workflow
    proposal = make_proposal(pump, proposed_by=users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/approve")
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert proposal.decided_by == users["supervisor"]
    assert proposal.status in (ProposalStatus.EXECUTED, ProposalStatus.FAILED)


def test_a_viewer_cannot_approve_through_the_dashboard(viewer_client, pump):
    proposal = make_proposal(pump)
    viewer_client.post(f"/dashboard/proposals/{proposal.pk}/approve")
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    page = viewer_client.get(f"/dashboard/proposals/{proposal.pk}/").content.decode()
    assert "Approve and execute" not in page


def test_rejecting_without_a_reason_changes_nothing(supervisor_client, pump):
    proposal = make_proposal(pump)
    supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject", {"reason": ""})
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject",
                           {"reason": "sensor fault, not a process fault"})
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.REJECTED


def test_proposals_api_lists_and_approves(supervisor_client, pump, users, settings):
    settings.MQTT_URL = None
    proposal = make_proposal(pump, proposed_by=users["agent"])
    listed = supervisor_client.get("/proposals", {"status": "pending_approval"}).json()
    assert [p["id"] for p in listed] == [proposal.pk]
    again = make_proposal(pump, proposed_by=users["supervisor"])
    refused = supervisor_client.post(f"/proposals/{again.pk}/approve")
    assert refused.status_code == 403
    assert refused.json()["title"].startswith("Four-eyes")


def test_an_out_of_scope_proposal_is_404(outsider_client, pump):
    proposal = make_proposal(pump)
    assert outsider_client.get(f"/proposals/{proposal.pk}").status_code == 404
    assert outsider_client.get(f"/dashboard/proposals/{proposal.pk}/").status_code == 404
