"""Tests of the IAE tail-probability path (qiskit-aer simulator; few qubits, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qiskit.quantum_info import Statevector
from scipy import stats

from simulation.engine import SimulationError, estimate_tail_probability, make_distribution
from simulation.engine.quantum import discretise, distribution_loader

STD_NORMAL = {"dist": "normal", "params": {"mean": 0.0, "std": 1.0}}
CASES = [
    pytest.param(STD_NORMAL, 1.0, ">", 4, id="normal-above-mean-plus-one-sigma"),
    pytest.param(
        {"dist": "normal", "params": {"mean": 5.0, "std": 2.0}}, 7.0, ">", 5, id="normal-5q"
    ),
    pytest.param(
        {"dist": "uniform", "params": {"low": 0.0, "high": 10.0}}, 7.0, "<", 3, id="uniform-below"
    ),
    pytest.param(
        {"dist": "lognormal", "params": {"mean": 0.0, "sigma": 0.5}}, 1.5, ">", 4, id="lognormal"
    ),
]


@pytest.mark.parametrize(("spec", "limit", "op", "qubits"), CASES)
def test_the_iae_interval_contains_the_exact_discretised_probability(
    spec: dict, limit: float, op: str, qubits: int
) -> None:
    result = estimate_tail_probability(spec, limit, op=op, num_qubits=qubits, epsilon=0.01)
    low, high = result.confidence_interval
    assert low <= result.exact_probability <= high
    assert low <= result.estimate <= high
    assert abs(result.estimate - result.exact_probability) <= 0.01
    assert high - low <= 2 * 0.01 + 1e-12


def test_the_discretised_probability_approaches_the_continuous_one_with_more_qubits() -> None:
    dist = make_distribution(STD_NORMAL)
    errors = [abs(discretise(dist, n, 1.0, ">").exact - stats.norm.sf(1.0)) for n in (3, 6, 9)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.005


def test_the_discretisation_has_unit_mass_on_an_increasing_grid() -> None:
    disc = discretise(make_distribution(STD_NORMAL), 5, 0.5, ">")
    assert disc.probabilities.shape == (32,)
    assert disc.probabilities.sum() == pytest.approx(1.0)
    assert np.all(np.diff(disc.grid) > 0)
    assert disc.grid[0] == pytest.approx(stats.norm.ppf(0.001))
    assert disc.exact == pytest.approx(disc.probabilities[disc.grid > 0.5].sum())


def test_the_loader_prepares_the_square_root_amplitudes() -> None:
    p = np.random.default_rng(0).dirichlet(np.ones(16))
    probabilities = Statevector(distribution_loader(p)).probabilities()
    assert np.allclose(probabilities, p, atol=1e-12)


def test_the_same_seed_gives_the_same_estimate() -> None:
    first = estimate_tail_probability(STD_NORMAL, 0.5, num_qubits=3, epsilon=0.02, seed=5)
    again = estimate_tail_probability(STD_NORMAL, 0.5, num_qubits=3, epsilon=0.02, seed=5)
    assert first.estimate == again.estimate
    assert first.powers == again.powers


def test_the_result_reports_circuit_size_queries_and_errors_as_json() -> None:
    result = estimate_tail_probability(STD_NORMAL, 1.0, num_qubits=3, epsilon=0.02)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["engine"] == "quantum_iae"
    assert data["num_qubits"] == 3 and data["total_qubits"] == 6
    assert data["circuit_depth"] > 0 and data["grover_depth"] > data["circuit_depth"]
    assert data["oracle_queries"] > 0 and data["shots"] == 100
    assert data["continuous_probability"] == pytest.approx(stats.norm.sf(1.0))
    assert data["discretisation_error"] == pytest.approx(
        abs(data["exact_probability"] - data["continuous_probability"])
    )
    assert data["elapsed_s"] > 0


def test_a_limit_beyond_the_grid_gives_a_zero_tail() -> None:
    result = estimate_tail_probability(STD_NORMAL, 10.0, num_qubits=3, epsilon=0.02)
    assert result.exact_probability == 0.0
    assert result.estimate < 0.02


def test_a_limit_below_the_grid_marks_every_state() -> None:
    result = estimate_tail_probability(STD_NORMAL, -10.0, num_qubits=3, epsilon=0.02)
    assert result.exact_probability == pytest.approx(1.0)
    assert result.estimate > 0.98


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dist": {"dist": "normal", "params": {"mean": 0, "std": 0}}}, "degenerate"),
        ({"dist": {"dist": "nope", "params": {}}}, "unknown distribution 'nope'"),
        ({"num_qubits": 0}, "num_qubits must be in 1..10"),
        ({"epsilon": 0.7}, "epsilon must be in \\(0, 0.5\\]"),
        ({"alpha": 1.5}, "alpha must be in \\(0, 1\\)"),
        ({"op": ">="}, "unknown op '>='"),
        ({"shots": 0}, "shots must be a positive integer"),
        ({"limit": float("nan")}, "limit must be a finite number"),
    ],
)
def test_it_rejects_bad_quantum_arguments(kwargs: dict, message: str) -> None:
    args = {"dist": STD_NORMAL, "limit": 1.0, **kwargs}
    dist, limit = args.pop("dist"), args.pop("limit")
    with pytest.raises(SimulationError, match=message):
        estimate_tail_probability(dist, limit, **args)
