"""The demo's plant answers back (issue 14): after an ``ok`` command the telemetry it publishes
follows the asset's what-if model for the action, until a rollback; a faulted command has no
effect or the wrong one; end to end, a followed proposal verifies and a faulted one rolls back.

Real Mosquitto (commands and acks) and PostgreSQL (telemetry, models, proposals).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from importlib import import_module

import numpy as np
import pytest
from django.apps import apps
from django.utils import timezone

from demo import runner
from demo.device import SimulatedDevice
from demo.plant import IGNORED, WRONG_WAY, FaultPlan, Plant
from demo.policy_document import ensure_demo_policy
from demo.provision import create_skab_twin
from demo.replay import interleave, to_event
from demo.skab import default_data_dir, read_run
from policy.choices import ProposalStatus
from policy.command_publisher import send_command
from policy.models import Proposal
from policy.services.verification import verify_due
from simulation.engine import DRIVERS
from simulation.services import action_model, fit_whatif_model
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import T0, event, ingest_matrix, missing, normal_pump_matrix
from twins.choices import AssetKind
from twins.models import Asset

FLOW, CURRENT = DRIVERS
NAMES = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
         "Thermocouple", "Voltage", "Volume Flow RateRMS"]  # normal_pump_matrix's columns


# --- the fault plan ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "faults"), [
    ("none", [None] * 8),
    ("ignore", [IGNORED] * 8),
    ("wrong-way:3", [None, None, WRONG_WAY, None, None, WRONG_WAY, None, None]),
    ("mixed:4", [None, None, None, WRONG_WAY, None, None, None, IGNORED]),
    ("Mixed:2", [None, WRONG_WAY, None, IGNORED, None, WRONG_WAY, None, IGNORED]),
])
def test_the_fault_plan_picks_every_nth_command(spec, faults):
    plan = FaultPlan.parse(spec)
    assert [plan.next() for _ in faults] == faults
    assert plan.counted == 8 and plan.faulted == sum(f is not None for f in faults)


@pytest.mark.parametrize("spec", ["sideways", "ignore:0", "ignore:x", "mixed:4:1", ""])
def test_a_fault_plan_that_is_not_mode_every_is_refused(spec):
    if spec == "":
        assert FaultPlan.parse(spec).mode == "none"  # empty: no faults
        return
    with pytest.raises(ValueError, match="fault"):
        FaultPlan.parse(spec)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_a_plant_needs_a_non_negative_int_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        Plant(seed=seed)


def test_the_fault_plan_says_what_it_does():
    assert FaultPlan.parse("mixed:4").describe().startswith(
        "every 4th command with an effect: wrong-way and ignored in turn")
    assert FaultPlan.parse("ignore").describe().startswith("every command with an effect")
    assert FaultPlan.parse("none").describe().startswith("none")


# --- the device's plant on the real broker -----------------------------------------------------
@pytest.fixture
def prefix(settings) -> str:
    """A topic prefix of this test's own, so parallel runs never hear each other."""
    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    return settings.MQTT_TOPIC_PREFIX


@pytest.fixture
def fitted_pump(pump):
    """The test pump with 400 rows of normal operation (flow ~125 drives current and pressure)
    and its what-if model fitted on them."""
    ingest_matrix(pump, normal_pump_matrix(400, seed=3), names=NAMES)
    fit_whatif_model(pump)
    return pump


def _command(pump, command_id: str, action: str, parameters: dict) -> dict:
    """Send a command through OpsTwin's own command channel; the asset's ack."""
    outcome = send_command(twin_slug=pump.twin.slug, asset_slug=pump.slug,
                           command_id=command_id, action=action, parameters=parameters,
                           expires_at=(timezone.now() + timedelta(minutes=1)).isoformat())
    assert outcome["delivery"]["ok"], outcome
    return outcome["effect"]


def _recorded(pump, n: int) -> list[dict]:
    """``n`` events as the recording has them: the normal operating point, 1 s apart."""
    rows = normal_pump_matrix(n, seed=11)
    return [event(pump, T0 + timedelta(hours=1, seconds=k), dict(zip(NAMES, map(float, row),
                                                                     strict=True)))
            for k, row in enumerate(rows)]


def _column(events: list[dict], metric: str) -> np.ndarray:
    return np.array([e["metrics"][metric] for e in events])


@pytest.mark.django_db(transaction=True)
def test_after_an_ok_command_the_plant_reads_as_the_model_until_the_rollback(
        mqtt_url, prefix, fitted_pump, settings):
    """GIVEN a pump whose what-if model is fitted WHEN reduce_load(0.5) is acknowledged ok
    THEN the flow, current and pressure it publishes have the model's distribution (about 90 %
    inside the model's p5-p95, mean at half the flow), the metrics the model does not drive
    stay as recorded; after restore_load the recording shows again, and a re-sent command id
    changes nothing."""
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 5.0
    plant = Plant(fault="none", seed=1)
    device = SimulatedDevice(mqtt_url, fitted_pump.twin.slug, plant=plant).start()
    recorded = _recorded(fitted_pump, 400)
    try:
        assert [plant.sense(e) for e in recorded[:5]] == recorded[:5]  # no command yet
        ack = _command(fitted_pump, "c-1", "reduce_load", {"fraction": 0.5})
        assert ack["status"] == "ok"
        # Readings after the last one sensed before the command are the plant's answer.
        assert datetime.fromisoformat(ack["effective_from"]) == \
            datetime.fromisoformat(recorded[4]["ts"])
        record = plant.records["c-1"]
        assert (record["effect"], record["fault"], record["model"]) == ("applied", None, "pump")
        assert set(record["moved"]) == {FLOW, CURRENT, "Pressure"}  # the fit's drivers
        sensed = [plant.sense(e) for e in recorded]

        model = action_model(fitted_pump, "reduce_load", {"fraction": 0.5},
                             at=T0 + timedelta(seconds=399))
        outcome, _ = model.draw(20_000, np.random.default_rng(7))
        for metric in record["moved"]:
            low, high = np.percentile(outcome[metric], [5, 95])
            inside = np.mean((_column(sensed, metric) >= low) & (_column(sensed, metric) <= high))
            assert 0.8 <= inside <= 0.97, (metric, inside)
            assert not np.any(_column(sensed, metric) == _column(recorded, metric))
        assert abs(_column(sensed, FLOW).mean() - 62.5) < 2.0  # (1 - 0.5) x 125
        for metric in set(NAMES) - set(record["moved"]):
            assert np.array_equal(_column(sensed, metric), _column(recorded, metric)), metric
        assert sensed[0]["tags"]["plant"] == "c-1 reduce_load"
        assert plant.answered[(fitted_pump.twin.slug, fitted_pump.slug)] == \
            {e["ts"] for e in recorded}

        assert _command(fitted_pump, "c-1-rollback", "restore_load", {"fraction": 0.5}
                        )["status"] == "ok"
        assert plant.records["c-1-rollback"]["effect"] == "ended"
        assert plant.active(fitted_pump.twin.slug, fitted_pump.slug) is None
        assert [plant.sense(e) for e in recorded[:50]] == recorded[:50]

        assert _command(fitted_pump, "c-1", "reduce_load", {"fraction": 0.5})["status"] == "ok"
        assert device.received[-1]["ack"].get("duplicate") is True
        assert plant.active(fitted_pump.twin.slug, fitted_pump.slug) is None  # no 2nd effect
        assert len(plant.records) == 2
    finally:
        device.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["ignore", "wrong-way"])
def test_a_faulted_command_is_acked_ok_but_has_no_effect_or_the_opposite_one(
        mqtt_url, prefix, fitted_pump, settings, fault):
    """GIVEN a plant set to get every command wrong WHEN reduce_load(0.5) is acknowledged ok
    THEN ignored: the recording goes on unchanged; wrong-way: the flow rises by the amount
    the model says it falls (mean ~187.5 instead of 62.5)."""
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 5.0
    plant = Plant(fault=fault, seed=1)
    device = SimulatedDevice(mqtt_url, fitted_pump.twin.slug, plant=plant).start()
    recorded = _recorded(fitted_pump, 300)
    try:
        assert _command(fitted_pump, "c-9", "reduce_load", {"fraction": 0.5})["status"] == "ok"
        record = plant.records["c-9"]
        sensed = [plant.sense(e) for e in recorded]
        if fault == "ignore":
            assert (record["fault"], record["effect"]) == (IGNORED, "none")
            assert sensed == recorded
        else:
            assert (record["fault"], record["effect"]) == (WRONG_WAY, "applied")
            flow = _column(sensed, FLOW)
            assert abs(flow.mean() - 187.5) < 3.0 and flow.min() > 125.0 - 10
            assert np.all(_column(sensed, CURRENT) >= 0.0)
            assert sensed[0]["tags"]["plant"] == "c-9 reduce_load (wrong-way)"
    finally:
        device.stop()


@pytest.mark.django_db(transaction=True)
def test_a_generic_asset_answers_with_its_declared_effect(mqtt_url, prefix, twin, settings):
    """GIVEN a generic one-metric asset (as the demo's NAB twin) and its generic model WHEN
    reduce_load(0.5) is acknowledged THEN its readings follow the declared effect (scale by
    1 - 0.5 g, g ~ U(0, 1)): about 90 % inside the model's own p5-p95, mean near 75 % of
    the recorded level."""
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 5.0
    asset = Asset.objects.create(twin=twin, slug="nab-like", name="NAB-like",
                                 kind=AssetKind.GENERIC, metrics=[{"name": "value"}])
    level = 100.0 + np.random.default_rng(5).normal(0, 2.0, (400, 1))
    ingest_matrix(asset, level, names=["value"])
    fit_whatif_model(asset)
    plant = Plant(fault="none", seed=2)
    device = SimulatedDevice(mqtt_url, twin.slug, plant=plant).start()
    recorded = [event(asset, T0 + timedelta(hours=1, seconds=k), {"value": 100.0})
                for k in range(300)]
    try:
        assert _command(asset, "g-1", "reduce_load", {"fraction": 0.5})["status"] == "ok"
    finally:
        device.stop()
    record = plant.records["g-1"]
    assert (record["model"], record["moved"], record["effect"]) == ("generic", ["value"],
                                                                    "applied")
    sensed = _column([plant.sense(e) for e in recorded], "value")
    model = action_model(asset, "reduce_load", {"fraction": 0.5}, at=T0 + timedelta(seconds=399))
    low, high = np.percentile(model.draw(20_000, np.random.default_rng(3))[0]["value"], [5, 95])
    assert 0.8 <= np.mean((sensed >= low) & (sensed <= high)) <= 0.97
    assert abs(sensed.mean() - 75.0) < 3.0


@pytest.mark.django_db(transaction=True)
def test_hold_and_a_command_without_a_model_have_no_effect(mqtt_url, prefix, pump, settings):
    """An asset without telemetry cannot be modelled: the command is acked (the device knows
    the action) and recorded as having no effect; hold moves nothing and is never faulted."""
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 5.0
    plant = Plant(fault="ignore", seed=1)
    device = SimulatedDevice(mqtt_url, pump.twin.slug, plant=plant).start()
    try:
        assert _command(pump, "c-5", "reduce_load", {"fraction": 0.2})["status"] == "ok"
        assert _command(pump, "c-6", "hold", {})["status"] == "ok"
    finally:
        device.stop()
    assert plant.records["c-5"]["effect"] == "none"
    assert "no telemetry" in plant.records["c-5"]["detail"]
    assert plant.records["c-6"]["effect"] == "ended"
    assert plant.faults.counted == 0  # neither had an effect to get wrong


# --- end to end: a SKAB slice through detection, policy, the device and verification ----------
E2E_FILES = ["valve1/8.csv", "valve1/14.csv"]
DETECTOR_SEEDS = ("0003_default_detector_configs", "0006_stream_state_generic_default",
                  "0008_pump_default_ewma_adaptive")


@pytest.fixture
def seeded_detectors(transactional_db):
    """The detector configuration the migrations seed (the demo's EWMA for pumps), which an
    earlier transactional test's flush removed: their data steps, replayed in order."""
    for name in DETECTOR_SEEDS:
        import_module(f"telemetry.migrations.{name}").forward(apps, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("seeded_detectors")
def test_a_followed_proposal_verifies_and_a_faulted_one_rolls_back(mqtt_url, prefix, settings,
                                                                  tmp_path):
    """GIVEN two SKAB valve files replayed through ingest, the signed demo policy and the
    device with a plant that reverses every 2nd command WHEN their anomalies are proposed and
    executed automatically THEN the first executed proposal verifies (the plant followed its
    model), the second breaches and is rolled back, and the summary says which and why."""
    root = default_data_dir(settings.BASE_DIR)
    if not root.exists():
        missing(f"SKAB data not found at {root}")
    settings.POLICY_DEV_KEY_DIR = tmp_path
    settings.POLICY_PUBLIC_KEYS = {}
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 5.0
    runs = [read_run(root, name) for name in E2E_FILES]
    twin = create_skab_twin(E2E_FILES, reset=True)
    assert "verified" in ensure_demo_policy(twin)
    plant = Plant(fault="wrong-way:2", seed=0)
    device = SimulatedDevice(mqtt_url, twin.slug, plant=plant).start()
    try:
        rows = list(interleave(runs))
        for k in range(0, len(rows), 40):  # as the subscriber commits: detection on commit
            batch = [RawPayload(body=device.sense(to_event(twin.slug, run, row)))
                     for run, row in rows[k : k + 40]]
            assert not ingest_batch(batch, source="replay").rejected
        verify_due(timezone.now())  # the sweeper: every window has its telemetry by now
    finally:
        device.stop()

    executed = runner.executed_outcomes(twin, plant.records)
    rows = executed["proposals"]
    assert len(rows) == 2, rows
    followed, faulted = rows
    assert (followed["status"], followed["cause"], followed["fault"]) == (
        ProposalStatus.VERIFIED, "verified", None)
    assert followed["why"].startswith("the plant followed the model")
    assert (faulted["status"], faulted["cause"], faulted["fault"]) == (
        ProposalStatus.ROLLED_BACK, "fault: wrong-way", WRONG_WAY)
    assert executed["by_cause"] == {"verified": 1, "fault: wrong-way": 1}
    rolled_back = Proposal.objects.get(pk=faulted["proposal"])
    assert plant.records[rolled_back.rollback["command_id"]]["effect"] == "ended"
    assert plant.active(twin.slug, rolled_back.asset.slug) is None
    summary = runner.summary(twin, runs, 0, plant.records, plant.answered)
    assert summary["executed"] == executed and summary["answered_rows"] > 0


# --- the summary's causes ---------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(("status", "outcome", "fault", "moved", "cause"), [
    (ProposalStatus.VERIFIED, "verified", None, [FLOW], "verified"),
    (ProposalStatus.VERIFIED, "verified", IGNORED, [CURRENT], "verified"),
    (ProposalStatus.ROLLED_BACK, "breach", WRONG_WAY, [FLOW], "fault: wrong-way"),
    (ProposalStatus.ROLLED_BACK, "breach", IGNORED, [FLOW], "fault: ignored"),
    (ProposalStatus.ROLLED_BACK, "breach", None, [FLOW], "model mismatch"),
    # the action does not move the judged metric: a fault cannot have caused the breach
    (ProposalStatus.ROLLED_BACK, "breach", WRONG_WAY, [CURRENT], "model mismatch"),
    (ProposalStatus.VERIFYING, None, None, [FLOW], "pending"),
    (ProposalStatus.EXECUTED, "inconclusive", None, [FLOW], "inconclusive"),
])
def test_the_summary_says_why_each_executed_proposal_ended_as_it_did(pump, status, outcome,
                                                                     fault, moved, cause):
    from policy.tests import factories

    proposal = factories.proposal(pump, status=status, action="open_valve")
    Proposal.objects.filter(pk=proposal.pk).update(
        executed_at=timezone.now(), execution={"command_id": f"proposal-{proposal.pk}"},
        verification={"metric": FLOW, "outcome": outcome, "n": 60, "outside": 50})
    record = {"fault": fault, "moved": moved, "effect": "applied", "detail": ""}
    row, = runner.executed_outcomes(pump.twin, {f"proposal-{proposal.pk}": record})["proposals"]
    assert (row["status"], row["cause"], row["fault"]) == (status, cause, fault)
    if cause == "model mismatch" and fault:
        assert "no modelled effect on Volume Flow RateRMS" in row["why"]
        assert f"the {fault} fault changed nothing there" in row["why"]
    if cause == "verified" and fault:
        assert row["why"].startswith("verified despite the fault (ignored); open_valve has no "
                                     "modelled effect on Volume Flow RateRMS")
