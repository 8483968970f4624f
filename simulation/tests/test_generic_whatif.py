"""What-if for every asset: the generic data-driven model (each metric's recent distribution,
the action's declared effect) for assets without a physical model; the pump model for pumps."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest

from policy.services import propose_action
from simulation import services
from simulation.engine import GenericModel, SimulationError, calibrate_recent, run_monte_carlo
from simulation.models import SimulationStatus, WhatIfModel
from telemetry.models import TelemetrySample
from tests.fixtures import T0, ingest_matrix, normal_pump_matrix
from twins.choices import AssetKind
from twins.models import Asset

pytestmark = pytest.mark.django_db
FLOW = "Volume Flow RateRMS"


def store(asset: Asset, metric: str, values: np.ndarray, *, step_s: int = 300) -> None:
    """Readings of one metric, ``step_s`` seconds apart (a plant's 5-minute cadence)."""
    TelemetrySample.objects.bulk_create(
        TelemetrySample(asset=asset, metric=metric, value=float(v),
                        ts=T0 + timedelta(seconds=step_s * i)) for i, v in enumerate(values))


def at_end(n: int, step_s: int = 300):
    return T0 + timedelta(seconds=step_s * (n - 1))


@pytest.fixture
def valve(twin) -> Asset:
    return Asset.objects.create(twin=twin, slug="valve-1", name="Valve 1", kind=AssetKind.VALVE,
                                metrics=[{"name": "Pressure", "unit": "bar"}])


@pytest.fixture
def server(twin) -> Asset:
    """A generic one-metric asset, as a NAB file replays (CPU utilisation in %)."""
    return Asset.objects.create(twin=twin, slug="cpu-1", name="CPU 1", kind=AssetKind.GENERIC,
                                metrics=[{"name": "value", "unit": "%"}])


def what_if(asset, action, parameters, metric, n, **kw):
    return services.run_what_if(asset=asset, action=action, parameters=parameters,
                                metrics=[metric], at=at_end(n), seed=3, n_samples=4000, **kw)


def test_a_valve_without_pump_drivers_gets_a_generic_what_if_with_breach_probabilities(valve):
    """GIVEN a one-metric valve (the pump model failed here: 'fit data lacks driver column(s)')
    WHEN its open_valve what-if runs THEN it succeeds on the generic model and reports
    P(breach) of both sides of the Pressure band."""
    rng = np.random.default_rng(0)
    store(valve, "Pressure", 2.0 + rng.normal(0, 0.05, 600))
    run = what_if(valve, "open_valve", {"fraction": 0.5}, "Pressure", 600)
    assert run.status == SimulationStatus.SUCCEEDED, run.error
    model = WhatIfModel.objects.get(asset=valve)
    assert model.kind == "generic" and run.request["model"] == "generic"
    assert [c["op"] for c in run.result["constraints"]] == [">", "<"]
    assert 0.0 <= services.breach_probability(run) < 0.05
    assert run.result["model"]["kind"] == "generic"
    assert 0.75 <= run.result["model"]["coverage_90"] <= 1.0
    assert "generic model" in run.result["model"]["summary"]


def test_reduce_load_scales_a_generic_metric_by_the_declared_uncertain_share(server):
    rng = np.random.default_rng(1)
    store(server, "value", 50 + rng.normal(0, 1.0, 500))
    hold = what_if(server, "hold", {}, "value", 500)
    reduced = what_if(server, "reduce_load", {"fraction": 0.4}, "value", 500)
    p50_hold = hold.result["metrics"]["value"]["p50"]
    p50_reduced = reduced.result["metrics"]["value"]["p50"]
    # x' = x (1 - 0.4 g), g ~ U(0, 1): median factor 0.8
    assert p50_hold == pytest.approx(50, abs=1.0)
    assert p50_reduced == pytest.approx(0.8 * p50_hold, rel=0.03)
    assert reduced.result["metrics"]["value"]["p5"] < 0.65 * p50_hold
    assert services.breach_probability(reduced) > services.breach_probability(hold)


def test_open_valve_brings_a_shifted_metric_back_toward_its_normal_centre(server):
    """The recent level drifted 10 std above normal; closing the full gap with a gain in
    [0.5, 1] puts the median three quarters of the way back."""
    rng = np.random.default_rng(2)
    values = 50 + rng.normal(0, 1.0, 500)
    values[480:] += 10.0
    store(server, "value", values)
    hold = what_if(server, "hold", {}, "value", 500)
    opened = what_if(server, "open_valve", {"fraction": 1.0}, "value", 500)
    assert hold.result["metrics"]["value"]["p50"] == pytest.approx(60, abs=1.0)
    assert opened.result["metrics"]["value"]["p50"] == pytest.approx(52.5, abs=1.0)
    assert services.breach_probability(hold) > 0.5 > services.breach_probability(opened)


def test_an_effect_passed_as_data_moves_only_its_named_metric(twin):
    motor = Asset.objects.create(twin=twin, slug="m", name="M", kind=AssetKind.MOTOR,
                                 metrics=[{"name": "Temperature"}, {"name": "Speed"}])
    rng = np.random.default_rng(3)
    store(motor, "Temperature", 60 + rng.normal(0, 0.5, 300))
    store(motor, "Speed", 1500 + rng.normal(0, 5, 300))
    effect = {"effects": [{"metrics": ["Temperature"], "mode": "shift", "direction": -1,
                           "amount": 4.0}]}
    run = services.run_what_if(asset=motor, action="cool", parameters={},
                               metrics=["Temperature", "Speed"], at=at_end(300), seed=1,
                               n_samples=2000, effect=effect)
    assert run.status == SimulationStatus.SUCCEEDED, run.error
    assert run.result["metrics"]["Temperature"]["p50"] == pytest.approx(56, abs=0.5)
    assert run.result["metrics"]["Speed"]["p50"] == pytest.approx(1500, abs=3)
    assert run.request["effect"] == effect


@pytest.mark.parametrize(("action", "parameters", "message"), [
    ("vent_steam", {}, "no declared effect"),
    ("reduce_load", {}, "needs the parameter 'fraction'"),
    ("reduce_load", {"fraction": 1.5}, r"must be in \(0, 1\]"),
    ("hold", {"fraction": 0.1}, "takes no parameter"),
])
def test_an_action_without_a_usable_declared_effect_fails_closed(server, action, parameters,
                                                                 message):
    store(server, "value", np.linspace(0, 10, 300))
    run = what_if(server, action, parameters, "value", 300)
    assert run.status == SimulationStatus.FAILED
    assert pytest.approx(1.0) == services.breach_probability(run)
    assert re.search(message, run.error), run.error


def test_a_pump_keeps_the_pump_model_and_a_stale_pump_model_on_a_valve_is_refitted(pump, valve,
                                                                                  settings):
    settings.SIMULATION_FIT_ROWS = 100
    ingest_matrix(pump, normal_pump_matrix(120))
    run = services.run_what_if(asset=pump, action="reduce_load", parameters={"fraction": 0.1},
                               metrics=[FLOW], at=T0 + timedelta(seconds=119), seed=5,
                               n_samples=2000)
    assert run.result["model"]["kind"] == "pump"
    assert run.result["model"]["summary"].startswith("SKAB pump model")
    pump_state = WhatIfModel.objects.get(asset=pump).state
    WhatIfModel.objects.create(asset=valve, kind="pump", state=pump_state, bands={}, n_rows=1)
    store(valve, "Pressure", 2.0 + np.random.default_rng(4).normal(0, 0.05, 200))
    run = what_if(valve, "hold", {}, "Pressure", 200)
    assert run.status == SimulationStatus.SUCCEEDED, run.error
    assert WhatIfModel.objects.get(asset=valve).kind == "generic"


def test_a_pump_without_its_drivers_falls_back_to_the_generic_model(twin):
    pump = Asset.objects.create(twin=twin, slug="p2", name="P2", kind=AssetKind.PUMP,
                                metrics=[{"name": "Pressure", "unit": "bar"}])
    store(pump, "Pressure", 1.0 + np.random.default_rng(5).normal(0, 0.01, 200))
    run = what_if(pump, "reduce_load", {"fraction": 0.1}, "Pressure", 200)
    assert run.status == SimulationStatus.SUCCEEDED, run.error
    assert run.result["model"]["kind"] == "generic"


def test_the_proposal_page_says_which_model_was_used_and_how_well_it_fits(server, users,
                                                                          supervisor_client):
    store(server, "value", 50 + np.random.default_rng(6).normal(0, 1.0, 400))
    proposal = propose_action(asset=server, action="hold", parameters={},
                              actor=users["admin"])
    assert proposal.simulation.status == SimulationStatus.SUCCEEDED, proposal.simulation.error
    page = supervisor_client.get(f"/dashboard/proposals/{proposal.pk}/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Model: generic model (each metric&#x27;s recent distribution" in text
    assert "of the next readings in training (ideal 90 %); fitted on 400 readings." in text


def test_coverage_is_near_ninety_percent_on_white_noise_and_high_on_a_random_walk():
    rng = np.random.default_rng(7)
    report = GenericModel.fit({"noise": rng.normal(0, 1, 2000)}).fit_report()["metrics"]
    report |= GenericModel.fit({"walk": np.cumsum(rng.normal(0, 1, 4000))},
                               window=2000).fit_report()["metrics"]
    assert report["noise"]["coverage_90"] == pytest.approx(0.9, abs=0.06)
    assert report["walk"]["coverage_90"] > 0.97
    assert report["noise"]["note"].endswith(": fits")
    assert "wider than needed" in report["walk"]["note"]


def test_a_non_negative_metric_is_never_simulated_below_zero():
    rng = np.random.default_rng(8)
    counts = rng.poisson(0.5, 400).astype(float)
    model = GenericModel.fit({"requests": counts})
    fn, inputs = model.what_if("hold", {}, calibrate_recent({"requests": counts[-300:]}))
    result = run_monte_carlo(fn, inputs, seed=1, n_samples=2000)
    assert result.metrics["requests"].percentiles[5] >= 0.0


def test_a_run_rebuilds_as_the_same_action_model_with_the_metrics_its_effect_moves(twin):
    """``run_action_model`` rebuilds a finished what-if (stored model, the run's state and
    declared effect): it moves only the effect's metric and draws the run's distribution."""
    motor = Asset.objects.create(twin=twin, slug="m2", name="M2", kind=AssetKind.MOTOR,
                                 metrics=[{"name": "Temperature"}, {"name": "Speed"}])
    rng = np.random.default_rng(4)
    store(motor, "Temperature", 60 + rng.normal(0, 0.5, 300))
    store(motor, "Speed", 1500 + rng.normal(0, 5, 300))
    effect = {"effects": [{"metrics": ["Temperature"], "mode": "shift", "direction": -1,
                           "amount": 4.0}]}
    run = services.run_what_if(asset=motor, action="cool", parameters={},
                               metrics=["Temperature"], at=at_end(300), seed=1,
                               n_samples=4000, effect=effect)
    model = services.run_action_model(run)
    assert (model.kind, model.moved, model.simulation_id) == ("generic", ("Temperature",), run.pk)
    outcome, hold = model.draw(20_000, np.random.default_rng(0))
    summary = run.result["metrics"]["Temperature"]
    assert np.percentile(outcome["Temperature"], 50) == pytest.approx(summary["p50"], abs=0.05)
    assert np.percentile(outcome["Temperature"], 95) == pytest.approx(summary["p95"], abs=0.1)
    assert np.array_equal(outcome["Speed"], hold["Speed"])  # no effect on Speed
    WhatIfModel.objects.filter(asset=motor).update(kind="pump")
    with pytest.raises(SimulationError, match="no longer"):
        services.run_action_model(run)
