"""Reported state, liveness, coalesced ``asset.state`` events, desired state and delta, and the
state of an asset at a past time (issue 14).

Readings go through the real ingest service (``telemetry.services.ingest_batch``); times that
depend on the server's clock are passed as ``now`` so nothing waits. Every state document and
feed event is validated against the schemas the server serves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.fixtures import grant_only
from twins import services
from twins.models import Asset, AssetType, AuditEntry, ReportedMetric, Twin
from twins.state import current_state, publish_states, set_desired
from twins.tests.twin_api import feed, ingest, problem, reading

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
CADENCE = 2.0  # seconds, declared by the asset type
INTERVALS = 5  # ASSET_SILENT_AFTER_INTERVALS


@pytest.fixture(autouse=True)
def state_settings(settings):
    settings.ASSET_SILENT_AFTER_INTERVALS = INTERVALS
    settings.ASSET_STATE_MIN_INTERVAL_SECONDS = 1.0
    settings.ASSET_STATE_PUBLISH_LIMIT = 2000


@pytest.fixture
def meter_type(db) -> AssetType:
    asset_type = AssetType(slug="meter", name="Meter", metrics=[
        {"name": "Pressure", "unit": "bar", "min": 0, "max": 20, "cadence_seconds": CADENCE},
        {"name": "Flow", "unit": "m3/h"}])
    services.save_asset_type(asset_type, actor="setup")
    return asset_type


def make(twin, slug, asset_type=None, metrics=None) -> Asset:
    asset = Asset(twin=twin, slug=slug, name=slug.title(), asset_type=asset_type,
                  metrics=metrics or [])
    services.save_asset(asset, actor="setup")
    return asset


@pytest.fixture
def pump(plant, meter_type) -> Asset:
    return make(plant, "pump-1", meter_type)


def state_events(client) -> list[dict]:
    return [e for e in feed(client) if e["type"] == "asset.state"]


# --- Reported state -------------------------------------------------------------------------

def test_ingest_keeps_the_last_reading_with_sensor_and_receipt_time(pump, served):
    before = timezone.now()
    report = ingest(reading(pump, T0, {"Pressure": 2.5, "Flow": 120.0}),
                    reading(pump, T0 + timedelta(seconds=2), {"Pressure": 2.7}))
    after = timezone.now()
    assert report.accepted == 2
    rows = {r.metric: r for r in ReportedMetric.objects.filter(asset=pump)}
    assert (rows["Pressure"].value, rows["Pressure"].ts) == (2.7, T0 + timedelta(seconds=2))
    assert (rows["Flow"].value, rows["Flow"].ts) == (120.0, T0)
    assert all(before <= r.received_at <= after for r in rows.values())
    state = current_state(pump, now=after)
    served.check("asset-state.v1", state)
    assert state["reported"]["Pressure"] == {
        "value": 2.7, "unit": "bar", "ts": (T0 + timedelta(seconds=2)).isoformat(),
        "received_at": rows["Pressure"].received_at.isoformat()}
    assert (state["liveness"], state["silent_after_seconds"]) == ("live", CADENCE * INTERVALS)


def test_a_late_older_sample_keeps_the_newer_value_but_refreshes_receipt_time(pump):
    ingest(reading(pump, T0 + timedelta(seconds=10), {"Pressure": 3.0}))
    first = ReportedMetric.objects.get(asset=pump, metric="Pressure")
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    late = ReportedMetric.objects.get(asset=pump, metric="Pressure")
    assert (late.value, late.ts) == (3.0, T0 + timedelta(seconds=10))
    assert late.received_at > first.received_at


def test_within_one_batch_the_newest_sensor_time_wins_whatever_the_order(pump):
    ingest(reading(pump, T0 + timedelta(seconds=5), {"Pressure": 5.0}),
           reading(pump, T0 + timedelta(seconds=1), {"Pressure": 1.0}),
           reading(pump, T0 + timedelta(seconds=3), {"Pressure": 3.0}))
    row = ReportedMetric.objects.get(asset=pump, metric="Pressure")
    assert (row.value, row.ts) == (5.0, T0 + timedelta(seconds=5))


def test_a_rejected_reading_leaves_the_reported_state_alone(pump):
    ingest(reading(pump, T0, {"Pressure": 2.0}))
    ingest(reading(pump, T0 + timedelta(seconds=1), {"Pressure": 99.0}))  # max is 20
    assert ReportedMetric.objects.get(asset=pump, metric="Pressure").value == 2.0


# --- Liveness ---------------------------------------------------------------------------------

def test_unknown_before_any_reading(pump, served):
    state = current_state(pump)
    served.check("asset-state.v1", state)
    assert (state["liveness"], state["last_received_at"], state["reported"]) == (
        "unknown", None, {})


@pytest.mark.parametrize("sensor_time", [datetime(2020, 1, 1, tzinfo=UTC), T0])
def test_liveness_follows_receipt_time_not_the_sensor_clock(pump, served, sensor_time):
    """A sensor whose clock says 2020 is live while readings keep arriving, and
    silent after ASSET_SILENT_AFTER_INTERVALS × its cadence without one (server clock)."""
    ingest(reading(pump, sensor_time, {"Pressure": 1.0}))
    received = ReportedMetric.objects.get(asset=pump).received_at
    silent_after = CADENCE * INTERVALS
    for offset, expected in [(0.0, "live"), (1.0, "live"), (silent_after - 0.1, "live"),
                             (silent_after + 0.1, "silent"), (3600.0, "silent")]:
        state = current_state(pump, now=received + timedelta(seconds=offset))
        served.check("asset-state.v1", state)
        assert state["liveness"] == expected, offset
        assert state["last_received_at"] == received.isoformat()


def test_without_a_declared_cadence_the_observed_one_is_used(plant, served):
    fan = make(plant, "fan-1", metrics=[{"name": "Speed", "unit": "1/min"}])
    ingest(reading(fan, T0, {"Speed": 900.0}))
    state = current_state(fan)
    assert (state["liveness"], state["silent_after_seconds"]) == ("unknown", None)
    ingest(*(reading(fan, T0 + timedelta(seconds=3 * k), {"Speed": 900.0 + k})
             for k in (1, 2, 3)))
    received = ReportedMetric.objects.get(asset=fan).received_at
    state = current_state(fan, now=received + timedelta(seconds=14))
    served.check("asset-state.v1", state)
    assert state["silent_after_seconds"] == pytest.approx(3 * INTERVALS)
    assert state["liveness"] == "live"
    assert current_state(fan, now=received + timedelta(seconds=16))["liveness"] == "silent"


# --- Coalesced asset.state events -------------------------------------------------------------

def test_many_batches_within_a_second_make_one_event_per_asset(plant, meter_type, users,
                                                               admin_client, served):
    pumps = [make(plant, f"pump-{n}", meter_type) for n in (1, 2)]
    for k in range(25):
        ingest(*(reading(p, T0 + timedelta(seconds=k), {"Pressure": 1.0 + k / 10})
                 for p in pumps))
    now = timezone.now()
    assert publish_states(now) == 2
    assert publish_states(now) == 0
    events = state_events(admin_client)
    assert sorted(e["resource_id"] for e in events) == sorted(str(p.pk) for p in pumps)
    for event in events:
        served.check("change-event.v1", event)
        served.check("asset-state.v1", event["data"])
        assert (event["operation"], event["twin"], event["resource_type"]) == (
            "updated", "plant", "asset_state")
        assert event["data"]["reported"]["Pressure"]["value"] == pytest.approx(3.4)
        assert event["data"]["liveness"] == "live"
    assert not AuditEntry.objects.filter(resource_type="asset_state").exists()


def test_the_next_event_waits_for_the_spacing_and_for_a_change(pump, admin_client, served):
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    start = timezone.now()
    assert publish_states(start) == 1
    ingest(reading(pump, T0 + timedelta(seconds=1), {"Pressure": 1.5}))
    assert publish_states(start + timedelta(seconds=0.5)) == 0  # within the spacing
    assert publish_states(start + timedelta(seconds=1.5)) == 1  # a new reading, spaced
    assert publish_states(start + timedelta(seconds=3)) == 0  # nothing changed
    assert publish_states(start + timedelta(seconds=4)) == 0
    values = [e["data"]["reported"]["Pressure"]["value"] for e in state_events(admin_client)]
    assert values == [1.0, 1.5]


def test_going_silent_is_one_event_and_then_quiet(pump, admin_client, served):
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    received = ReportedMetric.objects.get(asset=pump).received_at
    assert publish_states(received + timedelta(seconds=0.1)) == 1
    silent = received + timedelta(seconds=CADENCE * INTERVALS + 1)
    assert publish_states(silent) == 1
    assert publish_states(silent + timedelta(seconds=30)) == 0
    events = state_events(admin_client)
    assert [e["data"]["liveness"] for e in events] == ["live", "silent"]
    served.check("change-event.v1", events[-1])
    served.check("asset-state.v1", events[-1]["data"])


def test_a_new_revision_is_published_without_new_readings(pump, admin_client, served):
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    start = timezone.now()
    assert publish_states(start) == 1
    set_desired(pump, {"action": "reduce_load", "parameters": {"fraction": 0.1}},
                actor="policy")
    assert publish_states(start + timedelta(seconds=2)) == 1
    data = state_events(admin_client)[-1]["data"]
    served.check("asset-state.v1", data)
    assert (data["revision"], data["desired"]["action"]) == (pump.revision, "reduce_load")


def test_a_publication_limit_leaves_the_rest_due(plant, meter_type, settings):
    settings.ASSET_STATE_PUBLISH_LIMIT = 1
    pumps = [make(plant, f"pump-{n}", meter_type) for n in (1, 2)]
    ingest(*(reading(p, T0, {"Pressure": 1.0}) for p in pumps))
    now = timezone.now()
    assert [publish_states(now), publish_states(now), publish_states(now)] == [1, 1, 0]


def test_state_events_are_scoped_to_the_twins_a_caller_sees(plant, meter_type, users):
    elsewhere = Twin.objects.create(slug="elsewhere", name="Elsewhere")
    pumps = [make(plant, "pump-1", meter_type), make(elsewhere, "pump-1", meter_type)]
    ingest(*(reading(p, T0, {"Pressure": 1.0}) for p in pumps))
    assert publish_states(timezone.now()) == 2
    grant_only(users, plant)
    viewer = Client()
    viewer.force_login(users["viewer"])
    assert [e["twin"] for e in state_events(viewer)] == ["plant"]


# --- Desired state and delta ----------------------------------------------------------------

def desired_of(commanded: datetime, converge_seconds: float | None = 60.0, **expected) -> dict:
    return {"action": "reduce_load", "parameters": {"fraction": 0.2}, "proposal": 12,
            "commanded_at": commanded.isoformat(),
            "converge_by": (commanded + timedelta(seconds=converge_seconds)).isoformat()
            if converge_seconds is not None else None,
            "expected": expected or {"Pressure": [1.8, 2.2]}}


def test_set_desired_bumps_the_revision_and_is_audited_and_on_the_feed(
        pump, users, admin_client, served):
    desired = desired_of(timezone.now())
    returned = set_desired(pump, desired, actor=users["supervisor"], reason="proposal 12")
    assert returned.revision == pump.revision == 2
    stored = Asset.objects.get(pk=pump.pk)
    assert (stored.desired, stored.revision) == (desired, 2)
    entry = AuditEntry.objects.filter(action="asset.desire").get()
    assert (entry.actor, entry.role, entry.reason) == ("supervisor-user", "supervisor",
                                                       "proposal 12")
    assert (entry.before["desired"], entry.after["desired"]) == ({}, desired)
    assert (entry.before["revision"], entry.after["revision"]) == (1, 2)
    event = [e for e in feed(admin_client) if e["resource_type"] == "asset"][-1]
    assert event["type"] == "asset.updated"
    served.check("change-event.v1", event)
    assert event["data"]["desired"] == desired
    set_desired(pump, {}, actor="policy", reason="rolled back")
    stored.refresh_from_db()
    assert (stored.desired, stored.revision) == ({}, 3)
    detail = admin_client.get(f"/assets/{pump.pk}")
    assert detail["ETag"] == '"3"'


def test_delta_awaiting_then_converging_then_diverged_then_converged(pump, served):
    ingest(reading(pump, T0, {"Pressure": 2.6}))  # received before the command
    commanded = timezone.now()
    set_desired(pump, desired_of(commanded), actor="policy")

    def delta_at(seconds: float) -> list[dict]:
        state = current_state(pump, now=commanded + timedelta(seconds=seconds))
        served.check("asset-state.v1", state)
        return state["delta"]

    assert delta_at(5) == [{"metric": "Pressure", "status": "awaiting", "value": None,
                            "band": [1.8, 2.2]}]
    ingest(reading(pump, T0 + timedelta(seconds=1), {"Pressure": 2.6}))
    assert delta_at(30) == [{"metric": "Pressure", "status": "converging", "value": 2.6,
                             "band": [1.8, 2.2]}]
    assert delta_at(61) == [{"metric": "Pressure", "status": "diverged", "value": 2.6,
                             "band": [1.8, 2.2]}]
    ingest(reading(pump, T0 + timedelta(seconds=2), {"Pressure": 2.2}))  # on the band's edge
    assert delta_at(61) == []
    assert delta_at(5) == []


def test_delta_without_a_window_diverges_at_once_and_lists_unreported_metrics(pump, served):
    commanded = timezone.now()
    set_desired(pump, desired_of(commanded, None, Pressure=[1.0, 2.0], Flow=[100.0, 110.0]),
                actor="policy")
    ingest(reading(pump, T0, {"Pressure": 2.5}))
    state = current_state(pump, now=commanded + timedelta(seconds=1))
    served.check("asset-state.v1", state)
    assert [(d["metric"], d["status"]) for d in state["delta"]] == [
        ("Flow", "awaiting"), ("Pressure", "diverged")]


def test_the_state_endpoint_answers_the_present(pump, admin_client, served):
    ingest(reading(pump, T0, {"Pressure": 2.0}))
    set_desired(pump, desired_of(timezone.now()), actor="policy")
    body = served.response(admin_client.get(f"/assets/{pump.pk}/state"), "asset-state.v1",
                           200)
    assert (body["asset"], body["twin"], body["slug"], body["revision"]) == (
        pump.pk, "plant", "pump-1", 2)
    assert body["reported"]["Pressure"]["value"] == 2.0
    assert body["desired"]["proposal"] == 12
    assert body["delta"][0]["status"] == "awaiting"


# --- State at a past time ---------------------------------------------------------------------

def test_state_at_a_past_time_reads_stored_telemetry_by_sensor_time(pump, admin_client, served):
    ingest(*(reading(pump, T0 + timedelta(seconds=10 * k), {"Pressure": float(k + 1)})
             for k in range(3)))
    ingest(reading(pump, T0 + timedelta(seconds=5), {"Flow": 90.0}))

    def at(when: datetime) -> dict:
        response = admin_client.get(f"/assets/{pump.pk}/state", {"at": when.isoformat()})
        return served.response(response, "asset-state.v1", 200)

    early = at(T0 + timedelta(seconds=15))
    assert early["reported"] == {
        "Pressure": {"value": 2.0, "unit": "bar",
                     "ts": (T0 + timedelta(seconds=10)).isoformat(), "received_at": None},
        "Flow": {"value": 90.0, "unit": "m3/h", "ts": (T0 + timedelta(seconds=5)).isoformat(),
                 "received_at": None}}
    assert early["at"] == (T0 + timedelta(seconds=15)).isoformat()
    assert at(T0 + timedelta(seconds=20))["reported"]["Pressure"]["value"] == 3.0
    assert at(T0 + timedelta(seconds=4))["reported"] == {
        "Pressure": {"value": 1.0, "unit": "bar", "ts": T0.isoformat(), "received_at": None}}
    before = at(T0 - timedelta(seconds=1))
    assert (before["reported"], before["liveness"]) == ({}, "unknown")


def test_state_at_a_past_time_takes_desired_and_revision_from_the_audit_chain(
        pump, admin_client, served):
    created = timezone.now()
    first = desired_of(created, Pressure=[1.0, 2.0])
    set_desired(pump, first, actor="policy")
    between = timezone.now()
    second = desired_of(between, Pressure=[3.0, 4.0])
    set_desired(pump, second, actor="policy")
    last = timezone.now()

    def at(when: datetime) -> dict:
        response = admin_client.get(f"/assets/{pump.pk}/state", {"at": when.isoformat()})
        return served.response(response, "asset-state.v1", 200)

    assert AuditEntry.objects.filter(action="asset.desire").order_by("seq").first().at <= between
    assert (at(between)["desired"], at(between)["revision"]) == (first, 2)
    assert (at(last)["desired"], at(last)["revision"]) == (second, 3)
    long_ago = at(datetime(2020, 1, 1, tzinfo=UTC))
    assert (long_ago["desired"], long_ago["revision"]) == ({}, 0)
    assert served.response(admin_client.get(f"/assets/{pump.pk}/state"), "asset-state.v1",
                           200)["revision"] == 3


@pytest.mark.parametrize("value", ["yesterday", "2026-12-03T01:00:00", "2026-13-40T00:00:00Z",
                                   "0001-01-01T00:00:00Z", "", "2026-12-03T01:00:00+25:00",
                                   "1e400"])
def test_a_bad_at_is_a_400_problem(pump, admin_client, served, value):
    response = admin_client.get(f"/assets/{pump.pk}/state", {"at": value})
    assert "at" in problem(served, response, 400)["errors"]


def test_the_beat_task_publishes_due_states(pump, admin_client):
    """``twins.tasks.publish_asset_states`` (Celery beat, every spacing) is publish_states."""
    from twins.tasks import publish_asset_states

    ingest(reading(pump, T0, {"Pressure": 1.0}))
    assert publish_asset_states.delay().get() == 1
    assert publish_asset_states.delay().get() == 0
    assert [e["resource_id"] for e in state_events(admin_client)] == [str(pump.pk)]


def test_a_deleted_asset_has_no_state(pump, admin_client):
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    publish_states(timezone.now())
    services.delete_asset(pump, actor="test")
    assert admin_client.get(f"/assets/{pump.pk}/state").status_code == 404
    assert not ReportedMetric.objects.filter(asset_id=pump.pk).exists()
    assert publish_states(timezone.now() + timedelta(seconds=5)) == 0


def test_liveness_at_a_past_time_is_judged_on_what_had_been_received_by_then(
        pump, admin_client, served):
    before = timezone.now()
    ingest(reading(pump, T0, {"Pressure": 1.0}))
    received = ReportedMetric.objects.get(asset=pump).received_at

    def at(when: datetime) -> dict:
        response = admin_client.get(f"/assets/{pump.pk}/state", {"at": when.isoformat()})
        return served.response(response, "asset-state.v1", 200)

    assert at(before)["liveness"] == "unknown"  # nothing received yet then
    soon = at(received + timedelta(seconds=1))
    assert (soon["liveness"], soon["last_received_at"]) == ("live", received.isoformat())
    assert soon["reported"]["Pressure"]["value"] == 1.0  # sensor time T0 is long before
    assert at(received + timedelta(seconds=CADENCE * INTERVALS + 1))["liveness"] == "silent"


def test_a_past_state_with_a_desired_band_judges_readings_without_receipt_times():
    """State at a past time has no receipt times: the delta judges the values (no 500)."""
    from twins.state import DIVERGED, delta

    desired = {"commanded_at": "2026-01-01T00:00:00+00:00",
               "converge_by": "2026-01-01T00:01:00+00:00", "expected": {"Flow": [1.0, 2.0]}}
    reported = {"Flow": {"value": 5.0, "received_at": None}}
    at = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert delta(desired, reported, at) == [
        {"metric": "Flow", "status": DIVERGED, "value": 5.0, "band": [1.0, 2.0]}]
    assert delta(desired, {"Flow": {"value": 1.5, "received_at": None}}, at) == []
