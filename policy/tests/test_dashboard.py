"""The supervisor dashboard: proposals with their evidence and audit trail; act on them."""

from __future__ import annotations

import pytest

from policy.choices import ProposalStatus
from policy.tests import factories
from twins.audit_chain import write_anchor

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(settings):
    settings.MQTT_URL = None  # command outcomes are covered in test_execution


def test_the_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_supervisor_sees_pending_proposals_policy_and_audit_anchor(
        trusted, supervisor_client, pump, users):
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    write_anchor()
    page = supervisor_client.get("/").content.decode()
    assert f"/dashboard/proposals/{proposal.pk}/" in page
    assert "reduce_load" in page
    assert "v1 verified (test)" in page
    assert "anchor: seq 2" in page


def test_the_detail_page_links_evidence_decision_and_audit_trail(
        trusted, supervisor_client, pump, users):
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    factories.approved(pump, users["admin"])  # another proposal: not in this trail
    detail = supervisor_client.get(f"/dashboard/proposals/{proposal.pk}/").content.decode()
    for section in ("Approve and execute", "Decision trace", "Evidence", "Audit trail",
                    "Re-simulate", "Volume Flow RateRMS"):
        assert section in detail
    assert "policy.accept" in detail  # the policy version it was decided under


def test_a_supervisor_approves_through_the_dashboard(
        trusted, supervisor_client, pump, users, django_capture_on_commit_callbacks):
    proposal = factories.proposal(pump, proposed_by=users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/approve")
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert proposal.decided_by == users["supervisor"]
    assert proposal.status == ProposalStatus.FAILED  # no broker: delivery failed, recorded


def test_a_viewer_cannot_approve_through_the_dashboard(trusted, viewer_client, pump):
    proposal = factories.proposal(pump)
    forged = viewer_client.post(f"/dashboard/proposals/{proposal.pk}/approve")
    assert forged.status_code == 403
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    page = viewer_client.get(f"/dashboard/proposals/{proposal.pk}/").content.decode()
    assert "Approve and execute" not in page


def test_rejecting_without_a_reason_changes_nothing(trusted, supervisor_client, pump):
    proposal = factories.proposal(pump)
    supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject", {"reason": ""})
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.PENDING_APPROVAL
    supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/reject",
                           {"reason": "sensor fault, not a process fault"})
    proposal.refresh_from_db()
    assert proposal.status == ProposalStatus.REJECTED


def test_an_unknown_dashboard_verb_is_404(trusted, supervisor_client, pump):
    proposal = factories.proposal(pump)
    assert supervisor_client.post(f"/dashboard/proposals/{proposal.pk}/delete").status_code \
        == 404


def test_self_approval_through_the_api_is_a_403_problem(trusted, supervisor_client, pump,
                                                         users):
    proposal = factories.proposal(pump, proposed_by=users["supervisor"])
    refused = supervisor_client.post(f"/proposals/{proposal.pk}/approve")
    assert refused.status_code == 403
    assert refused.json()["title"].startswith("Four-eyes")
    assert refused["Content-Type"] == "application/problem+json"


def test_a_stale_proposal_is_a_409_problem_with_the_drifted_metric(
        trusted, supervisor_client, pump):
    proposal = factories.proposal(pump)
    factories.reading(pump, {"Temperature": 70.0})
    refused = supervisor_client.post(f"/proposals/{proposal.pk}/approve")
    assert refused.status_code == 409
    assert "Temperature" in refused.json()["detail"]
