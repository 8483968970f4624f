"""Tests of the sampling, Monte Carlo and engine-router parts of simulation.engine (no database)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from simulation.engine import (
    SimulationCancelled,
    SimulationError,
    choose_engine,
    run_monte_carlo,
    sample_inputs,
    simulate,
)

NORMAL = {"dist": "normal", "params": {"mean": 10.0, "std": 2.0}}
MIXED = {
    "a": NORMAL,
    "b": {"dist": "uniform", "params": {"low": -1.0, "high": 3.0}},
    "c": {"dist": "triangular", "params": {"low": 0.0, "mode": 1.0, "high": 4.0}},
    "d": {"dist": "lognormal", "params": {"mean": 0.5, "sigma": 0.4}},
    "e": {"dist": "weibull_min", "params": {"c": 1.5, "scale": 2.0}},
}
FROZEN = {
    "a": stats.norm(10.0, 2.0),
    "b": stats.uniform(-1.0, 4.0),
    "c": stats.triang(c=0.25, loc=0.0, scale=4.0),
    "d": stats.lognorm(s=0.4, scale=np.exp(0.5)),
    "e": stats.weibull_min(c=1.5, scale=2.0),
}


def _sum_model(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"total": sum(samples.values()), "a": samples["a"]}


# --- sampling -------------------------------------------------------------------------------


def test_the_same_seed_gives_an_identical_result_dict() -> None:
    kwargs = {"constraints": [{"metric": "total", "op": ">", "limit": 16.0}], "n_samples": 2000}
    first = run_monte_carlo(_sum_model, MIXED, seed=42, **kwargs).to_dict()
    second = run_monte_carlo(_sum_model, MIXED, seed=42, **kwargs).to_dict()
    other = run_monte_carlo(_sum_model, MIXED, seed=43, **kwargs).to_dict()
    for result in (first, second):
        result.pop("elapsed_s")
    assert first == second
    assert other["metrics"]["total"]["mean"] != first["metrics"]["total"]["mean"]


def test_the_same_seed_gives_identical_samples_for_every_method() -> None:
    for method in ("random", "sobol", "antithetic"):
        one = sample_inputs(MIXED, 500, 7, method=method)
        two = sample_inputs(MIXED, 500, np.random.default_rng(7), method=method)
        assert all(np.array_equal(one[k], two[k]) for k in MIXED), method


@pytest.mark.parametrize("name", sorted(MIXED))
def test_each_distribution_matches_its_analytic_mean_and_percentiles(name: str) -> None:
    x = sample_inputs({name: MIXED[name]}, 40_000, 1)[name]
    frozen = FROZEN[name]
    assert x.shape == (40_000,)
    assert abs(x.mean() - frozen.mean()) < 4 * frozen.std() / np.sqrt(x.size)
    for q in (0.05, 0.5, 0.95):
        assert abs(np.quantile(x, q) - frozen.ppf(q)) < 0.03 * frozen.std() + 0.02 * abs(
            frozen.ppf(q)
        )


def test_empirical_distribution_follows_its_quantile_function() -> None:
    spec = {"dist": "empirical", "params": {"quantiles": [0.0, 1.0, 3.0]}}
    x = sample_inputs({"r": spec}, 20_000, 3)["r"]
    assert x.min() >= 0.0 and x.max() <= 3.0
    assert abs(np.median(x) - 1.0) < 0.03
    assert abs(np.mean(x < 1.0) - 0.5) < 0.02


def test_a_zero_std_normal_is_a_point_mass() -> None:
    x = sample_inputs({"k": {"dist": "normal", "params": {"mean": 3.5, "std": 0}}}, 10, 0)["k"]
    assert np.all(x == 3.5)


def test_the_copula_produces_the_requested_correlation() -> None:
    inputs = {
        "x": {"dist": "normal", "params": {"mean": 0, "std": 1}},
        "y": {"dist": "normal", "params": {"mean": 5, "std": 3}},
        "z": {"dist": "normal", "params": {"mean": -2, "std": 0.5}},
    }
    target = np.array([[1.0, 0.7, -0.4], [0.7, 1.0, 0.0], [-0.4, 0.0, 1.0]])
    corr = {"names": ["x", "y", "z"], "matrix": target.tolist()}
    for method in ("random", "sobol", "antithetic"):
        s = sample_inputs(inputs, 20_000, 11, correlation=corr, method=method)
        got = np.corrcoef(np.vstack([s["x"], s["y"], s["z"]]))
        assert np.max(np.abs(got - target)) < 0.03, method


def test_a_perfect_correlation_is_accepted_as_positive_semi_definite() -> None:
    inputs = {"x": NORMAL, "y": NORMAL}
    corr = {"names": ["x", "y"], "matrix": [[1.0, 1.0], [1.0, 1.0]]}
    s = sample_inputs(inputs, 1000, 0, correlation=corr)
    assert np.allclose(s["x"], s["y"])


def test_correlating_a_subset_leaves_the_other_inputs_independent() -> None:
    corr = {"names": ["a", "b"], "matrix": [[1.0, 0.8], [0.8, 1.0]]}
    s = sample_inputs(MIXED, 20_000, 5, correlation=corr)
    assert stats.spearmanr(s["a"], s["b"]).statistic > 0.7
    assert abs(stats.spearmanr(s["a"], s["c"]).statistic) < 0.03


def _mean_estimates(method: str, seeds: range) -> np.ndarray:
    inputs = {k: MIXED[k] for k in ("a", "b", "d", "e")}

    def model(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # increasing in every input, mildly non-linear
        return {"y": s["a"] + 3.0 * s["b"] + np.sqrt(s["d"]) + np.log1p(s["e"])}

    return np.array(
        [
            run_monte_carlo(model, inputs, n_samples=1024, max_samples=1024, seed=s, method=method)
            .metrics["y"]
            .mean
            for s in seeds
        ]
    )


def test_sobol_and_antithetic_reduce_the_variance_of_the_mean_for_a_monotone_model() -> None:
    seeds = range(40)
    var_random = _mean_estimates("random", seeds).var()
    var_sobol = _mean_estimates("sobol", seeds).var()
    var_antithetic = _mean_estimates("antithetic", seeds).var()
    assert var_sobol < var_random / 20
    assert var_antithetic < var_random / 20


# --- Monte Carlo ------------------------------------------------------------------------------


def test_the_convergence_loop_doubles_n_until_the_rse_meets_the_target() -> None:
    # y ~ N(10, 5): rse = 0.5 / sqrt(n) -> needs n >= 2500, reached at 1000 -> 2000 -> 4000.
    inputs = {"y": {"dist": "normal", "params": {"mean": 10.0, "std": 5.0}}}
    calls: list[tuple[int, int]] = []
    result = run_monte_carlo(
        dict,
        inputs,
        n_samples=1000,
        max_samples=100_000,
        rse_target=0.01,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert result.n_samples == 4000
    assert result.batches == [1000, 1000, 2000]
    assert result.converged and result.rse <= 0.01
    assert calls == [(1000, 1000), (2000, 2000), (4000, 4000)]


def test_a_run_that_hits_max_samples_reports_not_converged() -> None:
    inputs = {"y": {"dist": "normal", "params": {"mean": 10.0, "std": 5.0}}}
    result = run_monte_carlo(dict, inputs, n_samples=500, max_samples=1500, rse_target=0.001)
    assert result.n_samples == 1500
    assert result.batches == [500, 500, 500]
    assert not result.converged
    assert result.rse > 0.001


def test_a_zero_mean_output_uses_its_std_as_the_rse_scale() -> None:
    inputs = {"y": {"dist": "normal", "params": {"mean": 0.0, "std": 3.0}}}
    result = run_monte_carlo(dict, inputs, n_samples=400, max_samples=400)
    assert result.rse == pytest.approx(1 / np.sqrt(400), rel=1e-6)


def test_the_breach_probability_of_a_normal_is_within_three_stderr_of_exact() -> None:
    constraints = [
        {"metric": "a", "op": ">", "limit": 12.5},
        {"metric": "a", "op": "<", "limit": 7.0},
    ]
    result = run_monte_carlo(_sum_model, MIXED, constraints=constraints, n_samples=20_000)
    exact = [stats.norm(10, 2).sf(12.5), stats.norm(10, 2).cdf(7.0)]
    for got, want in zip(result.constraints, exact, strict=True):
        assert got.stderr > 0
        assert abs(got.p_breach - want) < 3 * got.stderr
    assert result.constraints[0].label == "a > 12.5"


def test_the_result_dict_is_json_serialisable_and_has_the_documented_keys() -> None:
    result = run_monte_carlo(
        _sum_model,
        MIXED,
        constraints=[{"metric": "total", "op": ">", "limit": 18}],
        n_samples=1000,
        bins=12,
    ).to_dict()
    text = json.dumps(result)
    assert json.loads(text)["engine"] == "monte_carlo"
    assert {"n_samples", "converged", "rse", "seed", "method", "metrics", "constraints"} <= set(
        result
    )
    total = result["metrics"]["total"]
    assert [k for k in ("p5", "p25", "p50", "p75", "p95", "p99") if k in total] == [
        "p5",
        "p25",
        "p50",
        "p75",
        "p95",
        "p99",
    ]
    assert total["p5"] < total["p50"] < total["p99"]
    assert len(total["histogram"]["edges"]) == 13
    assert sum(total["histogram"]["counts"]) == result["n_samples"]
    assert set(result["constraints"][0]) >= {"metric", "op", "limit", "p_breach", "stderr"}


def test_a_none_seed_is_replaced_by_a_reported_reproducible_seed() -> None:
    first = run_monte_carlo(dict, {"a": NORMAL}, n_samples=100, seed=None)
    again = run_monte_carlo(dict, {"a": NORMAL}, n_samples=100, seed=first.seed)
    assert isinstance(first.seed, int)
    assert first.metrics["a"].mean == again.metrics["a"].mean


def test_cancellation_between_batches_raises_simulation_cancelled() -> None:
    inputs = {"y": {"dist": "normal", "params": {"mean": 10.0, "std": 5.0}}}
    checks = iter([False, True])
    with pytest.raises(SimulationCancelled, match="after 1000 samples"):
        run_monte_carlo(
            dict, inputs, n_samples=1000, rse_target=1e-6, cancelled=lambda: next(checks)
        )


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": {"dist": "banana", "params": {}}}, "unknown distribution 'banana'"),
        ({"x": {"dist": "normal", "params": {"mean": 0, "std": -1}}}, "std must be >= 0"),
        ({"x": {"dist": "normal", "params": {"mean": 0}}}, "missing \\['std'\\]"),
        ({"x": {"dist": "normal", "params": {"mean": "a", "std": 1}}}, "must be a number"),
        ({"x": {"dist": "uniform", "params": {"low": 2, "high": 1}}}, "need low < high"),
        ({"x": {"dist": "lognormal", "params": {"mean": 0, "sigma": 0}}}, "sigma must be > 0"),
        (
            {"x": {"dist": "triangular", "params": {"low": 0, "mode": 5, "high": 1}}},
            "low <= mode <= high",
        ),
        ({"x": {"dist": "weibull_min", "params": {"c": -1.0}}}, "bad parameters for 'weibull_min'"),
        ({"x": {"dist": "weibull_min", "params": {"k": 1.0}}}, "bad parameters for 'weibull_min'"),
        ({"x": {"dist": "binom", "params": {"n": 3, "p": 0.5}}}, "unknown distribution 'binom'"),
        ({}, "non-empty dict"),
    ],
)
def test_it_rejects_bad_input_specs_with_a_message_naming_the_problem(
    inputs: dict, message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        sample_inputs(inputs, 10, 0)


def test_it_rejects_an_unknown_distribution() -> None:
    with pytest.raises(SimulationError, match="input 'x': unknown distribution 'gauss'"):
        run_monte_carlo(dict, {"x": {"dist": "gauss", "params": {}}})


def test_it_rejects_a_negative_std() -> None:
    with pytest.raises(SimulationError, match="input 'x': std must be >= 0"):
        run_monte_carlo(dict, {"x": {"dist": "normal", "params": {"mean": 1, "std": -0.1}}})


def test_it_rejects_a_correlation_matrix_that_is_not_positive_semi_definite() -> None:
    inputs = {k: NORMAL for k in "xyz"}
    matrix = [[1, 0.9, 0.9], [0.9, 1, -0.9], [0.9, -0.9, 1]]
    with pytest.raises(SimulationError, match="not positive semi-definite"):
        sample_inputs(inputs, 10, 0, correlation={"names": list("xyz"), "matrix": matrix})


@pytest.mark.parametrize(
    ("correlation", "message"),
    [
        ({"names": ["x", "y"], "matrix": [[1, 0.5, 0], [0.5, 1, 0]]}, "shape \\(2, 3\\)"),
        ({"names": ["x", "q"], "matrix": [[1, 0], [0, 1]]}, "unknown input names \\['q'\\]"),
        ({"names": ["x", "y"], "matrix": [[1, 0.5], [0.4, 1]]}, "not symmetric"),
        ({"names": ["x", "y"], "matrix": [[2, 0], [0, 1]]}, "diagonal must be 1"),
        ({"names": ["x", "x"], "matrix": [[1, 0], [0, 1]]}, "duplicates"),
        ({"matrix": [[1]]}, "exactly 'names' and 'matrix'"),
    ],
)
def test_it_rejects_a_malformed_correlation(correlation: dict, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        sample_inputs({"x": NORMAL, "y": NORMAL}, 10, 0, correlation=correlation)


def test_it_rejects_a_constraint_on_a_metric_the_model_does_not_produce() -> None:
    with pytest.raises(SimulationError, match="unknown metric 'Presure'"):
        run_monte_carlo(
            _sum_model, MIXED, constraints=[{"metric": "Presure", "op": ">", "limit": 1}]
        )


def test_it_rejects_an_unknown_constraint_operator() -> None:
    with pytest.raises(SimulationError, match="unknown op '>='"):
        run_monte_carlo(dict, {"a": NORMAL}, constraints=[{"metric": "a", "op": ">=", "limit": 1}])


def test_it_rejects_an_unknown_sampling_method() -> None:
    with pytest.raises(SimulationError, match="unknown sampling method 'lhs'"):
        run_monte_carlo(dict, {"a": NORMAL}, method="lhs")


def test_it_rejects_model_outputs_with_nan_or_a_wrong_shape() -> None:
    with pytest.raises(SimulationError, match="'bad' has non-finite values"):
        run_monte_carlo(lambda s: {"bad": s["a"] * np.nan}, {"a": NORMAL}, n_samples=10)
    with pytest.raises(SimulationError, match="'short' has shape \\(3,\\)"):
        run_monte_carlo(lambda s: {"short": s["a"][:3]}, {"a": NORMAL}, n_samples=10)


def test_it_rejects_max_samples_below_n_samples() -> None:
    with pytest.raises(SimulationError, match="max_samples \\(10\\) must be >= n_samples"):
        run_monte_carlo(dict, {"a": NORMAL}, n_samples=100, max_samples=10)


# --- engine router and simulate ------------------------------------------------------------------

TAIL = {
    "inputs": {"x": {"dist": "normal", "params": {"mean": 0.0, "std": 1.0}}},
    "constraints": [{"metric": "x", "op": ">", "limit": 1.0}],
}


def test_it_rejects_an_unknown_engine() -> None:
    with pytest.raises(SimulationError, match="unknown engine 'gpu'"):
        simulate({**TAIL, "engine": "gpu"})
    with pytest.raises(SimulationError, match="unknown engine 'gpu'"):
        choose_engine({**TAIL, "engine": "gpu"})


def test_auto_routes_a_tail_request_to_monte_carlo_on_the_simulator_and_says_why() -> None:
    choice = choose_engine(TAIL)
    assert choice.engine == "monte_carlo"
    assert choice.reason.startswith("auto:")
    assert choice.cost["quantum_iae"]["simulator_seconds"] > choice.cost["monte_carlo"]["seconds"]
    assert choice.cost["p_plan"] == pytest.approx(stats.norm.sf(1.0))


def test_auto_prices_the_quantum_route_cheaper_on_hardware_for_a_very_narrow_error() -> None:
    choice = choose_engine({**TAIL, "cost_basis": "hardware", "epsilon": 1e-7})
    assert choice.engine == "quantum_iae"
    assert choice.cost["quantum_iae"]["hardware_seconds"] < choice.cost["monte_carlo"]["seconds"]
    wide = choose_engine({**TAIL, "cost_basis": "hardware", "epsilon": 0.01})
    assert wide.engine == "monte_carlo"


def test_mc_sample_needs_follow_the_binomial_formula() -> None:
    choice = choose_engine({**TAIL, "p_hint": 0.5, "epsilon": 0.01, "alpha": 0.05})
    z = stats.norm.ppf(0.975)
    assert choice.cost["monte_carlo"]["samples"] == int(np.ceil(z**2 * 0.25 / 0.01**2))


def test_explicit_engines_are_honoured() -> None:
    assert choose_engine({**TAIL, "engine": "quantum_iae"}).engine == "quantum_iae"
    assert choose_engine({**TAIL, "engine": "monte_carlo"}).engine == "monte_carlo"


def test_quantum_is_refused_for_a_request_it_cannot_serve() -> None:
    request = {**TAIL, "outputs": {"y": {"terms": {"x": 2.0}}}, "engine": "quantum_iae"}
    request["constraints"] = [{"metric": "y", "op": ">", "limit": 1.0}]
    with pytest.raises(SimulationError, match="only serves a tail-probability request"):
        simulate(request)


def test_simulate_runs_a_generic_linear_request_with_monte_carlo() -> None:
    request = {
        "inputs": {"a": NORMAL, "b": MIXED["b"]},
        "outputs": {"y": {"terms": {"a": 2.0, "b": -1.0}, "intercept": 0.5}},
        "correlation": {"names": ["a", "b"], "matrix": [[1, 0.3], [0.3, 1]]},
        "constraints": [{"metric": "y", "op": ">", "limit": 24.0}],
        "n_samples": 5000,
        "seed": 3,
        "method": "sobol",
    }
    result = simulate(request)
    json.dumps(result)
    assert result["engine_used"] == "monte_carlo"
    assert "not a single-input tail request" in result["engine_reason"]
    assert list(result["metrics"]) == ["y"]
    assert result["metrics"]["y"]["mean"] == pytest.approx(2 * 10 - 1 + 0.5, abs=0.05)
    assert result["method"] == "sobol"


def test_simulate_serves_a_tail_request_on_the_quantum_engine_when_asked() -> None:
    result = simulate({**TAIL, "engine": "quantum_iae", "num_qubits": 3, "epsilon": 0.02})
    assert result["engine_used"] == "quantum_iae"
    assert result["engine"] == "quantum_iae"
    low, high = result["constraints"][0]["ci"]
    assert low <= result["exact_probability"] <= high


def test_simulate_sizes_a_tail_run_for_the_priced_accuracy() -> None:
    result = simulate({**TAIL, "epsilon": 0.004, "n_samples": 1000})
    assert result["engine_used"] == "monte_carlo"
    assert result["n_samples"] >= result["cost"]["monte_carlo"]["samples"] > 1000
    p = result["constraints"][0]["p_breach"]
    assert abs(p - stats.norm.sf(1.0)) < 3 * result["constraints"][0]["stderr"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"inputs": {"x": NORMAL}, "colour": "red"}, "unknown request keys \\['colour'\\]"),
        ({"constraints": []}, "exactly one of 'inputs' or 'pump'"),
        (
            {"inputs": {"x": NORMAL}, "outputs": {"y": {"terms": {"q": 1}}}},
            "unknown input\\(s\\) \\['q'\\]",
        ),
        (
            {"inputs": {"x": NORMAL}, "constraints": [{"metric": "z", "op": "<", "limit": 0}]},
            "unknown metric 'z'",
        ),
        ({"inputs": {"x": NORMAL}, "outputs": {"y": {"expr": "x*2"}}}, "expected"),
        ({**TAIL, "num_qubits": 40}, "num_qubits must be in 1..10"),
        ({**TAIL, "shots": 0}, "shots must be a positive integer"),
        ("x > 1", "request must be a JSON object"),
    ],
)
def test_simulate_rejects_malformed_requests(request_: object, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        simulate(request_)  # type: ignore[arg-type]


def test_simulate_passes_cancellation_through() -> None:
    with pytest.raises(SimulationCancelled):
        simulate({"inputs": {"x": NORMAL}}, cancelled=lambda: True)
