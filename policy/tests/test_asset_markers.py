"""Asset page (issue 15): executed actions, verifications and rollbacks marked on the charts,
and the charts extending live on the live ranges.

The charts are in sensor time while actions happen on OpsTwin's clock: a marker sits at the
sensor time of the newest reading OpsTwin had received when the action happened. Here the
readings are dated 2020 (a replay) and received in 2026, ten seconds apart on both clocks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.tests import factories
from telemetry.chart_data import GAP_FACTOR

pytestmark = pytest.mark.django_db
T0 = datetime(2020, 3, 1, tzinfo=UTC)  # sensor time of the first reading
N, STEP = 720, 10  # 2 hours of readings: the last at T0 + 7,190 s


@pytest.fixture
def wall0():
    return timezone.now() - timedelta(hours=3)  # receipt time of the first reading


@pytest.fixture
def replayed(pump, wall0):
    for k in range(N):
        factories.reading(pump, {"Pressure": 1.0 + k % 7}, ts=T0 + timedelta(seconds=k * STEP),
                          received_at=wall0 + timedelta(seconds=k * STEP))
    return pump


def executed(asset, at, *, status=ProposalStatus.EXECUTED, **fields) -> Proposal:
    proposal = factories.proposal(asset, status=status)
    Proposal.objects.filter(pk=proposal.pk).update(executed_at=at, **fields)
    return proposal


def chart_json(response) -> dict:
    page = response.content.decode()
    start = page.index('<script id="chart-data" type="application/json">')
    body = page[page.index(">", start) + 1:page.index("</script>", start)]
    return json.loads(body)


def test_executions_verifications_and_rollbacks_in_range_are_marked_in_sensor_time(
        supervisor_client, replayed, wall0):
    """GIVEN a verified execution and an execution rolled back within the last hour of the
    data, an execution before it and a proposal never executed, WHEN the last hour is shown,
    THEN the chart JSON marks the in-range ones at the sensor time of the newest reading
    received when each happened, oldest first, with text labels and proposal links."""
    def wall(s):
        return wall0 + timedelta(seconds=s)

    verified = executed(replayed, wall(3005), status=ProposalStatus.VERIFIED, verification={
        "outcome": "verified", "judged_at": wall(3605).isoformat()})
    rolled = executed(replayed, wall(6003), status=ProposalStatus.ROLLED_BACK,
                      rollback_started_at=wall(6509))
    early = executed(replayed, wall(100))
    factories.proposal(replayed)  # pending: never executed
    response = supervisor_client.get("/twins/plant/pump-1/?range=1h")
    markers = chart_json(response)["markers"]
    sensor = T0.timestamp()
    assert markers == [
        [sensor + 3600, "verified", f"✓ verified #{verified.pk}",
         f"/dashboard/proposals/{verified.pk}/"],
        [sensor + 6000, "executed", f"▲ executed #{rolled.pk} reduce_load",
         f"/dashboard/proposals/{rolled.pk}/"],
        [sensor + 6500, "rolled_back", f"↺ rolled back #{rolled.pk}",
         f"/dashboard/proposals/{rolled.pk}/"],
    ]  # verified's execution (T0 + 3,000 s) and the early one are before the hour
    page = response.content.decode()
    assert f'<a href="/dashboard/proposals/{rolled.pk}/">↺ rolled back #{rolled.pk}</a>' in page
    assert "charted at 1 Mar 2020, 01:48:20 UTC" in page  # T0 + 6,500 s
    everything = chart_json(supervisor_client.get("/twins/plant/pump-1/?range=all"))["markers"]
    assert [m[1:3] for m in everything[:2]] == [
        ["executed", f"▲ executed #{early.pk} reduce_load"],
        ["executed", f"▲ executed #{verified.pk} reduce_load"]]
    assert len(everything) == 5


def test_a_failed_rollback_and_an_unverified_execution_mark_only_the_execution(
        supervisor_client, replayed, wall0):
    failed = executed(replayed, wall0 + timedelta(seconds=7000), status=ProposalStatus.FAILED,
                      rollback_started_at=wall0 + timedelta(seconds=7100),
                      verification={"outcome": "breach",
                                    "judged_at": (wall0 + timedelta(seconds=7050)).isoformat()})
    markers = chart_json(supervisor_client.get("/twins/plant/pump-1/?range=1h"))["markers"]
    assert [m[1] for m in markers] == ["executed"] and f"#{failed.pk}" in markers[0][2]


def test_an_action_before_any_reading_was_received_has_no_place(supervisor_client, replayed,
                                                                wall0):
    executed(replayed, wall0 - timedelta(days=1))
    page = supervisor_client.get("/twins/plant/pump-1/?range=all")
    assert chart_json(page)["markers"] == []
    assert "No action was executed, verified or rolled back in this range." in \
        page.content.decode()


def _marker_queries(client) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/twins/plant/pump-1/?range=all").status_code == 200
    sql = [q["sql"] for q in captured.captured_queries]
    return len(sql), sum('"executed_at" IS NOT NULL' in q for q in sql)


def test_the_markers_take_one_query_however_many_actions(supervisor_client, replayed, wall0):
    executed(replayed, wall0 + timedelta(seconds=500))
    few = _marker_queries(supervisor_client)
    for k in range(6):
        executed(replayed, wall0 + timedelta(seconds=600 + k * 50),
                 status=ProposalStatus.ROLLED_BACK,
                 rollback_started_at=wall0 + timedelta(seconds=620 + k * 50))
    many = _marker_queries(supervisor_client)
    assert few[1] == many[1] == 1
    assert few[0] == many[0]
    assert len(chart_json(supervisor_client.get("/twins/plant/pump-1/?range=all"))["markers"]) \
        == 13


def test_a_live_range_extends_from_asset_state_events_and_a_custom_range_does_not(
        supervisor_client, replayed):
    """The last hour asks the stream for asset.state and tells the chart script how to extend
    (this asset, the span kept, the gap rule); a custom range of the past does neither."""
    live = supervisor_client.get("/twins/plant/pump-1/?range=1h")
    extension = chart_json(live)["live"]
    bucket_s = live.context["window"].width.total_seconds()
    assert extension == {"asset": replayed.pk, "span_s": 3600.0,
                         "gap_s": GAP_FACTOR * max(bucket_s, STEP)}
    assert 'data-live-types="anomaly,proposal,asset.state"' in live.content.decode()
    custom = supervisor_client.get(
        "/twins/plant/pump-1/?range=custom&start=2020-03-01T00:10:00&end=2020-03-01T00:20:00")
    assert chart_json(custom)["live"] is None
    assert 'data-live-types="anomaly,proposal"' in custom.content.decode()
    assert chart_json(supervisor_client.get("/twins/plant/pump-1/?range=all"))["live"][
        "span_s"] is None


def test_the_list_of_actions_follows_the_feed_as_a_fragment(supervisor_client, replayed, wall0):
    """GIVEN the page open on the last hour, WHEN an action executes (a proposal event makes
    console.js fetch ?fragment=markers with the page's range), THEN the fragment lists it and
    carries the markers' JSON the charts redraw from, in the same shape as the chart JSON's,
    in a bounded number of queries."""
    page = supervisor_client.get("/twins/plant/pump-1/?range=1h").content.decode()
    assert 'data-fragment="markers" data-live-types="proposal"' in page
    assert 'id="chart-markers"' not in page  # the page's markers are in the chart JSON
    url = "/twins/plant/pump-1/?range=1h&fragment=markers"
    with CaptureQueriesContext(connection) as empty:
        assert "No action was executed" in supervisor_client.get(url).content.decode()
    proposal = executed(replayed, wall0 + timedelta(seconds=7000))
    with CaptureQueriesContext(connection) as one:
        response = supervisor_client.get(url)
    body = response.content.decode()
    assert "<html" not in body and response["X-Feed-Cursor"]
    assert f'<a href="/dashboard/proposals/{proposal.pk}/">▲ executed #{proposal.pk} ' in body
    start = body.index('<script id="chart-markers" type="application/json">')
    rows = json.loads(body[body.index(">", start) + 1:body.index("</script>", start)])
    assert rows == [[T0.timestamp() + 7000, "executed", f"▲ executed #{proposal.pk} reduce_load",
                     f"/dashboard/proposals/{proposal.pk}/"]]
    assert len(one.captured_queries) == len(empty.captured_queries)
