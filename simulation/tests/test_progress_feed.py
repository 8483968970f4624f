"""A running simulation's progress on the change feed (issue 15: progress bars move live).

Each throttled progress write of a running job also appends a feed-only ``simulation.progress``
event (simulation-progress.v1), which agents and the console read from ``/diff`` like any
other event; it is not an audit entry.
"""

from __future__ import annotations

import pytest

from simulation import services
from simulation.models import SimulationStatus
from simulation.services.progress import ProgressWriter
from simulation.tests.factories import linear_request, stored_run
from twins.models import AuditEntry
from twins.schemas import errors

pytestmark = pytest.mark.django_db
#: Drawn in chunks of 65,536 samples: four progress calls (65,536, 131,072, 196,608, 200,000).
BIG = linear_request(n_samples=200_000, max_samples=200_000)


def progress_events(client) -> list[dict]:
    page = client.get("/diff", {"since": "0", "limit": "1000",
                                "types": "simulation.progress"}).json()
    assert not page["has_more"]
    return page["events"]


def test_a_running_job_puts_its_progress_on_the_feed_valid_against_its_schema(
        agent_client, users, pump, settings):
    """GIVEN a queued 200,000-sample run on the pump, WHEN a worker runs it with no throttle,
    THEN every progress write is a simulation.progress event on /diff, in order, valid
    change-event.v1 with simulation-progress.v1 data, and none is an audit entry."""
    settings.SIMULATION_PROGRESS_SECONDS = 0
    run = stored_run(pump, created_by=users["agent"], request=BIG)
    audited = AuditEntry.objects.count()
    assert services.execute_run(run.pk).status == SimulationStatus.SUCCEEDED
    events = progress_events(agent_client)
    assert [e["data"]["samples_done"] for e in events] == [65_536, 131_072, 196_608, 200_000]
    for event in events:
        assert (event["type"], event["resource_type"], event["resource_id"], event["twin"]) == (
            "simulation.progress", "simulation_progress", str(run.pk), pump.twin.slug)
        assert errors("change-event.v1", event) == []
        assert errors("simulation-progress.v1", event["data"]) == []
    assert events[0]["data"] == {"run": run.pk, "twin": pump.twin.slug,
                                 "progress": pytest.approx(65_536 / 200_000),
                                 "samples_done": 65_536, "samples_target": 200_000,
                                 "status": "running"}
    # The lifecycle (start, succeeded) is audited; progress is not.
    assert AuditEntry.objects.count() - audited == 2


def test_progress_events_are_throttled_with_the_row_write(agent_client, users, pump, settings):
    """GIVEN the production throttle (one write per interval, the first always), WHEN the
    same run draws four chunks well within one interval, THEN one progress event only."""
    settings.SIMULATION_PROGRESS_SECONDS = 3600
    run = stored_run(pump, created_by=users["agent"], request=BIG)
    services.execute_run(run.pk)
    assert [e["data"]["samples_done"] for e in progress_events(agent_client)] == [65_536]


def test_no_progress_event_once_the_run_is_no_longer_running(agent_client, users, pump):
    run = stored_run(pump, created_by=users["agent"], status=SimulationStatus.CANCELLED)
    ProgressWriter(run.pk, interval=0, twin=pump.twin)(10, 100)
    assert progress_events(agent_client) == []


def test_a_run_without_an_asset_reports_progress_to_whoever_started_it(
        agent_client, viewer_client, users, settings):
    """GIVEN a twin-less run started by the agent, WHEN the worker runs it, THEN its progress
    events reach the agent's feed (twin-less events are shown to their actor), not a
    viewer's."""
    settings.SIMULATION_PROGRESS_SECONDS = 0
    run = stored_run(created_by=users["agent"], request=BIG)
    assert services.execute_run(run.pk).status == SimulationStatus.SUCCEEDED
    events = progress_events(agent_client)
    assert events and all(e["twin"] is None and e["actor"] == "agent-user" for e in events)
    assert errors("change-event.v1", events[0]) == []
    assert progress_events(viewer_client) == []
