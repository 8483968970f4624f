"""Tests of the SKAB pump what-if model (data read in place from /work/shared/datasets/skab)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demo.skab import columns, default_data_dir, read_run
from simulation.engine import (
    PumpModel,
    SimulationError,
    calibrate_state,
    run_monte_carlo,
    simulate,
)
from simulation.engine.pump_model import CURRENT, DEPENDENTS, DRIVERS, FLOW, OWN_DISTRIBUTION
from tests.fixtures import missing

REPO_ROOT = Path(__file__).resolve().parents[2]
SKAB = default_data_dir(REPO_ROOT)


@pytest.fixture(scope="module")
def needs_skab() -> None:
    """The SKAB data beside the repo: CI (``OPSTWIN_REQUIRE_SERVICES=1``) fails without it, a
    laptop without ``../shared`` skips (``tests.fixtures.missing``)."""
    if not SKAB.is_dir():
        missing(f"SKAB data not found at {SKAB}")


def load_skab(relative: str) -> dict[str, np.ndarray]:
    """One SKAB file as column arrays (``demo.skab``, the product's reader)."""
    return columns(read_run(SKAB, relative))


def head(data: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in data.items()}


@pytest.fixture(scope="module")
def valve1(needs_skab) -> dict[str, np.ndarray]:
    return load_skab("valve1/0.csv")


@pytest.fixture(scope="module")
def anomaly_free(needs_skab) -> dict[str, np.ndarray]:
    return load_skab("anomaly-free/anomaly-free.csv")


@pytest.fixture(scope="module")
def pooled(valve1: dict, anomaly_free: dict) -> dict[str, np.ndarray]:
    return {k: np.concatenate([valve1[k][:400], anomaly_free[k][:400]]) for k in anomaly_free}


def _p50(model: PumpModel, action: str, params: dict, state: dict) -> dict[str, float]:
    fn, inputs = model.what_if(action, params, state)
    result = run_monte_carlo(fn, inputs, n_samples=4000, max_samples=4000, seed=1)
    return {m: s.percentiles[50] for m, s in result.metrics.items()}


def synthetic(n: int = 300, constant_flow: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    flow = np.full(n, 32.0) if constant_flow else rng.normal(100.0, 5.0, n)
    current = 0.5 + 0.02 * flow + rng.normal(0, 0.05, n)
    return {
        FLOW: flow,
        CURRENT: current,
        "Pressure": 0.01 * flow + rng.normal(0, 0.02, n),
        "Accelerometer1RMS": 0.002 * flow + rng.normal(0, 0.001, n),
        "Accelerometer2RMS": rng.normal(0.3, 0.01, n),
        "Temperature": 60 + 0.2 * flow + 3.0 * current + rng.normal(0, 0.3, n),
        "Thermocouple": rng.normal(25.0, 0.1, n),
    }


# --- fitting on SKAB --------------------------------------------------------------------------


@pytest.mark.usefixtures("needs_skab")
@pytest.mark.parametrize("source", ["valve1", "anomaly_free"])
def test_a_fit_on_the_first_400_rows_reports_r2_and_residual_std_per_metric(
    source: str, request: pytest.FixtureRequest
) -> None:
    data = head(request.getfixturevalue(source), 0, 400)
    report = PumpModel.fit(data).fit_report()
    assert report["n_rows"] == 400
    assert set(report["metrics"]) == {*DEPENDENTS, *OWN_DISTRIBUTION}
    for name, metric in report["metrics"].items():
        assert 0.0 <= metric["r2"] <= 1.0, name
        assert metric["resid_std"] > 0, name
        assert metric["uses_drivers"] == (metric["r2"] >= report["r2_min"]), name
    assert report["metrics"][CURRENT]["drivers_used"] == [FLOW]
    assert report["metrics"]["Voltage"]["drivers_used"] == []
    json.dumps(report, allow_nan=False)


@pytest.mark.usefixtures("needs_skab")
def test_metrics_that_barely_depend_on_the_drivers_are_flagged_in_the_report(valve1: dict) -> None:
    report = PumpModel.fit(head(valve1, 0, 400)).fit_report()
    weak = [m for m in DEPENDENTS if report["metrics"][m]["r2"] < report["r2_min"]]
    assert "Pressure" in weak  # within one valve run pressure is pure noise w.r.t. the drivers
    for name in weak:
        assert "barely depends" in report["metrics"][name]["note"]
        assert not report["metrics"][name]["uses_drivers"]


@pytest.mark.usefixtures("needs_skab")
def test_a_fit_across_two_operating_points_finds_strong_driver_relations(pooled: dict) -> None:
    report = PumpModel.fit(pooled).fit_report()
    for name in ("Accelerometer1RMS", "Accelerometer2RMS", CURRENT):
        assert report["metrics"][name]["r2"] > 0.7, name
        assert report["metrics"][name]["uses_drivers"], name
    assert report["metrics"][CURRENT]["slopes"][FLOW] > 0


@pytest.mark.usefixtures("needs_skab")
def test_reduce_load_moves_each_metric_the_way_its_fitted_slope_says(pooled: dict) -> None:
    model = PumpModel.fit(pooled)
    state = calibrate_state(head(pooled, 340, 400))  # recent window of the valve run
    hold = _p50(model, "hold", {}, state)
    reduced = _p50(model, "reduce_load", {"fraction": 0.3}, state)
    assert reduced[CURRENT] < hold[CURRENT]
    assert reduced[FLOW] < hold[FLOW]
    for name, fit in model.fits.items():
        if name == CURRENT:
            continue
        shift = sum(-0.3 * state[d]["mean"] * b for d, b in fit.slopes.items())
        if fit.uses_drivers:
            assert np.sign(reduced[name] - hold[name]) == np.sign(shift), name
        else:
            assert reduced[name] == hold[name], name  # same seed, slopes not applied


@pytest.mark.usefixtures("needs_skab")
def test_reduce_load_on_a_single_valve_run_lowers_current_but_not_unsupported_metrics(
    valve1: dict,
) -> None:
    model = PumpModel.fit(head(valve1, 0, 400))
    state = calibrate_state(head(valve1, 340, 400))
    hold = _p50(model, "hold", {}, state)
    reduced = _p50(model, "reduce_load", {"fraction": 0.2}, state)
    assert reduced[CURRENT] == pytest.approx(0.8 * hold[CURRENT], rel=0.05)
    assert reduced["Pressure"] == hold["Pressure"]


@pytest.mark.usefixtures("needs_skab")
def test_hold_predicts_the_recent_level_of_each_metric(anomaly_free: dict) -> None:
    model = PumpModel.fit(head(anomaly_free, 0, 400))
    state = calibrate_state(head(anomaly_free, 340, 400))
    p50 = _p50(model, "hold", {}, state)
    for name in ("Temperature", "Thermocouple", "Accelerometer1RMS"):
        spread = model.fits[name].resid_std
        assert abs(p50[name] - state[name]["mean"]) < spread, name


@pytest.mark.usefixtures("needs_skab")
def test_a_constant_recent_flow_window_falls_back_to_the_training_spread(valve1: dict) -> None:
    model = PumpModel.fit(head(valve1, 0, 400))
    window = head(valve1, 340, 400)
    window[FLOW] = np.full(60, 32.0)
    state = calibrate_state(window)
    assert state[FLOW]["std"] == 0.0
    _, inputs = model.what_if("hold", {}, state)
    assert inputs[FLOW]["params"]["std"] == pytest.approx(model.drivers[FLOW]["std"])
    assert inputs[FLOW]["params"]["std"] > 0


# --- model behaviour on synthetic data --------------------------------------------------------


def test_a_constant_flow_column_falls_back_to_an_intercept_only_model() -> None:
    model = PumpModel.fit(synthetic(constant_flow=True))
    report = model.fit_report()
    assert report["drivers"][FLOW]["constant"] is True
    assert any("constant" in note and FLOW in note for note in report["notes"])
    current = report["metrics"][CURRENT]
    assert current["drivers_used"] == [] and current["slopes"] == {}
    assert current["r2"] == pytest.approx(0.0, abs=1e-12)
    assert "intercept-only" in current["note"]
    assert report["metrics"]["Temperature"]["drivers_used"] == [CURRENT]
    json.dumps(report, allow_nan=False)


def test_the_fit_recovers_known_slopes() -> None:
    model = PumpModel.fit(synthetic(n=2000))
    assert model.fits["Pressure"].slopes[FLOW] == pytest.approx(0.01, abs=0.001)
    assert model.fits[CURRENT].slopes[FLOW] == pytest.approx(0.02, abs=0.002)
    assert model.fits["Accelerometer1RMS"].r2 > 0.9
    assert model.fits["Accelerometer2RMS"].r2 < 0.01
    assert not model.fits["Accelerometer2RMS"].uses_drivers


def test_the_model_state_round_trips_through_json() -> None:
    model = PumpModel.fit(synthetic())
    restored = PumpModel.from_state(json.loads(json.dumps(model.to_state(), allow_nan=False)))
    assert restored.fit_report() == model.fit_report()
    state = calibrate_state(head(synthetic(), 200, 260))
    before = _p50(model, "reduce_load", {"fraction": 0.25}, state)
    after = _p50(restored, "reduce_load", {"fraction": 0.25}, state)
    assert before == after


def test_emergency_stop_drives_flow_and_current_to_zero() -> None:
    model = PumpModel.fit(synthetic())
    state = calibrate_state(synthetic())
    p50 = _p50(model, "emergency_stop", {}, state)
    assert p50[FLOW] == 0.0 and p50[CURRENT] == 0.0
    assert p50["Accelerometer1RMS"] < 0.05


def test_open_valve_moves_flow_toward_the_training_mean() -> None:
    data = synthetic()
    model = PumpModel.fit(data)
    window = {k: v[:50] * (0.5 if k == FLOW else 1.0) for k, v in data.items()}  # throttled
    state = calibrate_state(window)
    p50 = _p50(model, "open_valve", {"fraction": 0.5}, state)
    expected = state[FLOW]["mean"] + 0.5 * (model.drivers[FLOW]["mean"] - state[FLOW]["mean"])
    assert p50[FLOW] == pytest.approx(expected, rel=0.02)
    assert p50[CURRENT] > state[CURRENT]["mean"]  # current follows the fitted flow slope


def test_hold_ignores_a_noise_level_deviation_but_follows_a_real_level_shift() -> None:
    data = synthetic()
    model = PumpModel.fit(data)  # Thermocouple ~ N(25, 0.1), independent of the drivers
    trained = model.fits["Thermocouple"].mean
    assert not model.fits["Thermocouple"].uses_drivers
    state = calibrate_state(head(data, 200, 260))
    state["Thermocouple"] = {"mean": trained + 0.005, "std": 0.1, "n": 60}  # z ~ 0.4
    assert _p50(model, "hold", {}, state)["Thermocouple"] == pytest.approx(trained, abs=0.01)
    state["Thermocouple"] = {"mean": trained + 1.0, "std": 0.1, "n": 60}  # z ~ 77
    assert _p50(model, "hold", {}, state)["Thermocouple"] == pytest.approx(trained + 1.0, abs=0.01)


def test_calibrate_state_summarises_a_window_and_ignores_nan() -> None:
    state = calibrate_state({"x": [1.0, 2.0, np.nan, 3.0]})
    assert state["x"] == {"mean": 2.0, "std": 1.0, "n": 3, "last": 3.0}


def test_what_if_inputs_are_distributions_not_constants() -> None:
    model = PumpModel.fit(synthetic())
    _, inputs = model.what_if("hold", {}, calibrate_state(synthetic()))
    assert set(DRIVERS) <= set(inputs)
    assert inputs[FLOW]["dist"] == "normal" and inputs[FLOW]["params"]["std"] > 0
    assert inputs["noise:Pressure"]["dist"] == "empirical"


def test_simulate_runs_a_pump_request_end_to_end() -> None:
    model = PumpModel.fit(synthetic())
    request = {
        "pump": {
            "model": model.to_state(),
            "action": "reduce_load",
            "params": {"fraction": 0.2},
            "state": calibrate_state(synthetic()),
        },
        "constraints": [{"metric": "Pressure", "op": ">", "limit": 1.2}],
        "n_samples": 2000,
    }
    result = simulate(request)
    assert result["engine_used"] == "monte_carlo"
    assert result["constraints"][0]["label"] == "Pressure > 1.2"
    assert result["metrics"]["Pressure"]["p50"] < 0.9


# --- errors -----------------------------------------------------------------------------------


def test_it_rejects_an_unknown_action() -> None:
    model = PumpModel.fit(synthetic())
    with pytest.raises(SimulationError, match="unknown action 'vent'"):
        model.what_if("vent", {}, calibrate_state(synthetic()))


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("reduce_load", {}, "needs exactly the parameter 'fraction'"),
        ("reduce_load", {"fraction": 1.5}, "fraction must be in \\(0, 1\\]"),
        ("open_valve", {"fraction": "half"}, "must be a number"),
        ("hold", {"fraction": 0.2}, "takes no parameters"),
    ],
)
def test_it_rejects_bad_action_parameters(action: str, params: dict, message: str) -> None:
    model = PumpModel.fit(synthetic())
    with pytest.raises(SimulationError, match=message):
        model.what_if(action, params, calibrate_state(synthetic()))


def test_it_rejects_a_state_without_the_drivers() -> None:
    model = PumpModel.fit(synthetic())
    state = calibrate_state({"Pressure": [0.1, 0.2]})
    with pytest.raises(SimulationError, match="state lacks 'Volume Flow RateRMS'"):
        model.what_if("hold", {}, state)


def test_it_rejects_fit_data_without_a_driver_or_with_too_few_rows() -> None:
    data = synthetic()
    with pytest.raises(SimulationError, match="lacks driver column"):
        PumpModel.fit({k: v for k, v in data.items() if k != CURRENT})
    with pytest.raises(SimulationError, match="at least 10 complete rows"):
        PumpModel.fit(head(data, 0, 5))


def test_it_rejects_a_foreign_model_state() -> None:
    with pytest.raises(SimulationError, match="is not a 'opstwin.skab_pump_linear' state"):
        PumpModel.from_state({"kind": "other"})
    state = PumpModel.fit(synthetic()).to_state()
    del state["fits"]
    with pytest.raises(SimulationError, match="malformed model state"):
        PumpModel.from_state(state)


# --- which metrics an action moves (the demo's plant reads this) -------------------------------


@pytest.mark.parametrize("action", ["hold", "reduce_load", "open_valve", "emergency_stop"])
def test_moved_metrics_are_exactly_the_outputs_the_action_changes(action: str) -> None:
    """Same input draws through the action and through hold: the outputs that differ are the
    ones ``moved_metrics`` names, and the others are identical (no modelled effect)."""
    from simulation.engine import sample_inputs

    model = PumpModel.fit(synthetic())
    state = calibrate_state({k: v[-100:] for k, v in synthetic().items()})
    params = {"fraction": 0.5} if action in ("reduce_load", "open_valve") else {}
    fn, inputs = model.what_if(action, params, state)
    hold_fn, _ = model.what_if("hold", {}, state)
    samples = sample_inputs(inputs, 500, 4)
    out, hold = fn(samples), hold_fn(samples)
    changed = {m for m in out if not np.array_equal(out[m], hold[m])}
    assert set(model.moved_metrics(action, params)) == changed
    if action != "hold":
        assert {FLOW, "Pressure", "Temperature"} <= changed
        assert not changed & {"Accelerometer2RMS", "Thermocouple"}  # not driven by the load
    assert model.non_negative() >= {FLOW, CURRENT}
    with pytest.raises(SimulationError):
        model.moved_metrics("self_destruct", {})
