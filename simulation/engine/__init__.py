"""OpsTwin simulation engine: pure Python (numpy / scipy / qiskit), no Django.

Public API:

* :func:`sample_inputs` - joint samples of named input distributions (random, Sobol,
  antithetic; optional Gaussian copula).
* :func:`run_monte_carlo` -> :class:`MonteCarloResult` - vectorised Monte Carlo with a
  convergence loop, percentiles, histograms and constraint breach probabilities.
* :class:`PumpModel`, :func:`calibrate_state` - SKAB pump what-if model.
* :class:`GenericModel`, :func:`calibrate_recent`, ``EFFECTS`` - the data-driven what-if of
  any other asset (each metric's recent distribution, actions' declared effects).
* :func:`estimate_tail_probability` -> :class:`QuantumResult` - tail probability by
  Iterative Quantum Amplitude Estimation on the qiskit-aer simulator.
* :func:`choose_engine` -> :class:`EngineChoice`, :func:`simulate` - the engine router (cost
  model) and the JSON request entry point (request shape in :mod:`simulation.engine.request`).
* :class:`SimulationError` (bad input, a ``ValueError``) and :class:`SimulationCancelled`.

Importing this package does not import qiskit (seconds of start-up for every Django process):
:mod:`.quantum` imports qiskit, qiskit-aer and qiskit-algorithms inside the functions that
build and run circuits.
"""

from .distributions import BUILTIN_DISTRIBUTIONS, Distribution, make_distribution
from .effects import EFFECTS, resolve_effect
from .engine_router import EngineChoice, choose_engine, simulate
from .errors import SimulationCancelled, SimulationError
from .generic_model import GenericModel, calibrate_recent
from .montecarlo import ConstraintResult, MetricSummary, MonteCarloResult, run_monte_carlo
from .pump_model import ACTIONS, DEPENDENTS, DRIVERS, OWN_DISTRIBUTION, PumpModel, calibrate_state
from .quantum import QuantumResult, estimate_tail_probability
from .request import ENGINES
from .sampling import METHODS, sample_inputs

__all__ = [
    "ACTIONS",
    "BUILTIN_DISTRIBUTIONS",
    "DEPENDENTS",
    "DRIVERS",
    "EFFECTS",
    "ENGINES",
    "METHODS",
    "OWN_DISTRIBUTION",
    "ConstraintResult",
    "Distribution",
    "EngineChoice",
    "GenericModel",
    "MetricSummary",
    "MonteCarloResult",
    "PumpModel",
    "QuantumResult",
    "SimulationCancelled",
    "SimulationError",
    "calibrate_recent",
    "calibrate_state",
    "choose_engine",
    "estimate_tail_probability",
    "make_distribution",
    "resolve_effect",
    "run_monte_carlo",
    "sample_inputs",
    "simulate",
]
