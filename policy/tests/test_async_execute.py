"""Commands leave web requests: execute and roll back claim in the request and answer 202; the
``actions`` queue sends and waits; one MQTT connection per process carries every command."""

from __future__ import annotations

import threading

import pytest

from policy import command_publisher as commands
from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.tests import factories
from twins.feed import announce_commit
from twins.models import ChangeEvent
from twins.mqtt import connect_client, make_client

pytestmark = pytest.mark.django_db
TEMP = {"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95, "max_age_s": 60,
        "guards": ["reduce_load"]}


def statuses_on_the_feed(proposal) -> list[str]:
    return list(ChangeEvent.objects.filter(resource_type="proposal",
                                           resource_id=str(proposal.pk))
                .order_by("id").values_list("data__status", flat=True))



def work_queued(callbacks: list) -> list:
    """The on-commit callbacks that queue work, without the change feed's notifications."""
    return [c for c in callbacks if getattr(c, "func", None) is not announce_commit]

def test_execute_answers_202_with_the_proposal_before_the_command_is_sent(
        trusted, pump, users, executor_client, device, django_capture_on_commit_callbacks):
    """GIVEN an approved proposal, WHEN an executor executes it over the API, THEN the answer
    is 202 with the executing proposal and its Location, nothing has been sent yet, and the
    queued completion sends the command; the outcome reaches the change feed."""
    proposal = factories.approved(pump, users["supervisor"])
    with django_capture_on_commit_callbacks() as queued:
        response = executor_client.post(f"/proposals/{proposal.pk}/execute")
    assert response.status_code == 202
    assert response["Location"] == f"/proposals/{proposal.pk}"
    body = response.json()
    assert body["status"] == ProposalStatus.EXECUTING
    assert body["execution"]["command_id"] == f"proposal-{proposal.pk}"
    assert device.received == []
    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:
            callback()  # the actions queue's turn (eager Celery: inline)
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.VERIFYING
    assert [a["command_id"] for a in device.applied] == [f"proposal-{proposal.pk}"]
    assert statuses_on_the_feed(proposal)[-3:] == ["executing", "executed", "verifying"]


def test_a_refused_execution_is_still_answered_by_the_request(
        pump, users, signing_key, executor_client, device, django_capture_on_commit_callbacks):
    """An interlock that blocks the action is a 409 in the request; nothing is queued."""
    factories.reading(pump)
    factories.signed_policy(pump.twin, signing_key, interlocks=[TEMP])
    wide = factories.simulation(pump, std=5.0)
    proposal = factories.approved(pump, users["supervisor"], run=wide)
    factories.reading(pump, {"Temperature": 97.0, "Volume Flow RateRMS": 125.0,
                             "Pressure": 1.0})
    with django_capture_on_commit_callbacks() as queued:
        response = executor_client.post(f"/proposals/{proposal.pk}/execute")
    assert response.status_code == 409
    assert "Temperature 97 < 95" in response.json()["detail"]
    assert work_queued(queued) == []
    assert Proposal.objects.get(pk=proposal.pk).status == ProposalStatus.APPROVED


def test_rollback_answers_202_and_the_queue_sends_the_rollback(
        trusted, pump, users, supervisor_client, device, django_capture_on_commit_callbacks):
    from policy import services

    proposal = factories.approved(pump, users["supervisor"])
    services.execute_proposal(proposal.pk)
    with django_capture_on_commit_callbacks(execute=True):
        response = supervisor_client.post(f"/proposals/{proposal.pk}/rollback",
                                          {"reason": "undo it"}, content_type="application/json")
    assert response.status_code == 202
    assert response["Location"] == f"/proposals/{proposal.pk}"
    assert response.json()["rollback"]["command_id"] == f"proposal-{proposal.pk}-rollback"
    rolled = Proposal.objects.get(pk=proposal.pk)
    assert rolled.status == ProposalStatus.ROLLED_BACK
    assert rolled.rollback["reason"] == "undo it" and rolled.rollback["acknowledged"] is True
    assert [a["action"] for a in device.applied] == ["reduce_load", "restore_load"]


def test_the_dashboard_claims_and_says_the_command_is_queued(
        trusted, pump, users, executor_client, device, django_capture_on_commit_callbacks):
    proposal = factories.approved(pump, users["supervisor"])
    with django_capture_on_commit_callbacks() as queued:
        response = executor_client.post(f"/dashboard/proposals/{proposal.pk}/execute",
                                        follow=True)
    page = response.content.decode()
    assert "execution claimed, command queued; now executing" in page
    assert f"proposal-{proposal.pk}</code> claimed" in page and "being sent (attempt 0)" in page
    assert len(work_queued(queued)) == 1 and device.received == []


def test_one_connection_carries_every_command_of_a_process(twin, pump, device):
    """GIVEN several commands sent one after another and two at once, THEN they share one
    MQTT connection (connected once), and each gets its own ack by command id."""
    send = {"twin_slug": twin.slug, "asset_slug": pump.slug, "action": "hold",
            "parameters": {}}
    first = commands.send_command(command_id="c-1", **send)
    channel = commands.channel()
    results: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda cid=cid: results.update(
        {cid: commands.send_command(command_id=cid, **send)})) for cid in ("c-2", "c-3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first["acknowledged"] and all(r["acknowledged"] for r in results.values())
    assert {cid: r["effect"]["status"] for cid, r in results.items()} == {"c-2": "ok",
                                                                           "c-3": "ok"}
    assert commands.channel() is channel and channel.connects == 1
    assert sorted(a["command_id"] for a in device.applied) == ["c-1", "c-2", "c-3"]


def test_the_channel_reconnects_when_the_broker_drops_it(twin, pump, device, mqtt_url):
    """GIVEN the process's channel, WHEN the broker drops its connection (another client
    takes over its client id), THEN the next command still goes through, on a new
    connection of the same channel."""
    send = {"twin_slug": twin.slug, "asset_slug": pump.slug, "action": "hold",
            "parameters": {}}
    assert commands.send_command(command_id="r-1", **send)["acknowledged"]
    channel = commands.channel()
    intruder = make_client(mqtt_url, client_id=channel.client_id)
    connected = threading.Event()
    intruder.on_connect = lambda *_args: connected.set()
    connect_client(intruder, mqtt_url)
    intruder.loop_start()
    assert connected.wait(5)
    intruder.disconnect()
    intruder.loop_stop()
    outcome = commands.send_command(command_id="r-2", **send)
    assert outcome["acknowledged"], outcome
    assert commands.channel() is channel and channel.connects >= 2
