"""Turning a caller's request into the request a run stores and executes.

The stored request must reproduce the run on its own, so a seed is drawn when the caller gave
none and, for a pump what-if on an asset, the asset's fitted model (``pump.model``) and its
state calibrated on the newest ``SIMULATION_CALIBRATION_WINDOW`` readings (``pump.state``) are
filled in when the caller left them out. Sample counts are bounded by
``SIMULATION_MAX_SAMPLES`` (memory: every sample of every input and output is kept).
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils import timezone

from simulation.engine import EngineChoice, SimulationError
from simulation.engine.distributions import BUILTIN_DISTRIBUTIONS
from telemetry.models import TelemetryEvent
from twins.models import Asset

SEED_BITS = 31  # exact in every JSON client (JavaScript numbers) and every engine's RNG
SIZE_KEYS = ("n_samples", "max_samples", "shots")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(request: Mapping[str, Any]) -> None:
    """Sample counts, when given, are JSON integers in [1, SIMULATION_MAX_SAMPLES]: a float such
    as ``3e6`` is refused up front rather than truncated or compared as a float."""
    limit = settings.SIMULATION_MAX_SAMPLES
    for key in SIZE_KEYS:
        if key not in request:
            continue
        value = request[key]
        if not _is_int(value) or value < 1:
            raise SimulationError(f"{key} must be a positive integer, got {value!r:.40}")
        if value > limit:
            raise SimulationError(f"{key} = {value} exceeds SIMULATION_MAX_SAMPLES = {limit}")


def _check_seed(seed: Any) -> None:
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**63):
        raise SimulationError(f"seed must be an integer in [0, 2^63), got {seed!r:.40}")


def _newest_ts(asset: Asset):
    return (TelemetryEvent.objects.filter(asset=asset).order_by("-ts")
            .values_list("ts", flat=True).first())


def _complete_pump(pump: Any, asset: Asset) -> Any:
    from simulation.services.whatif import PUMP, asset_model, recent_state

    if not isinstance(pump, Mapping):
        return pump  # the engine names the problem
    pump = dict(pump)
    if "model" not in pump:
        model = asset_model(asset)
        if model.kind != PUMP:
            raise SimulationError(f"{asset} has a {model.kind} what-if model, not a pump model: "
                                  "simulate its actions through a proposal's what-if")
        pump["model"] = model.state
    if "state" not in pump:
        pump["state"] = recent_state(asset, at=_newest_ts(asset) or timezone.now())
    return pump


def prepare_request(request: Any, *, asset: Asset | None) -> dict[str, Any]:
    """A deep copy of ``request`` (engine shape) with the seed and the asset's pump parts filled.

    Raises:
        SimulationError: not a JSON object, a seed or sample count that is not a JSON
            integer, a sample count above ``SIMULATION_MAX_SAMPLES``, more inputs than
            ``SIMULATION_MAX_INPUTS``,
            or (NotEnoughTelemetry) too little telemetry to fit or calibrate the asset's model.
    """
    if not isinstance(request, Mapping):
        raise SimulationError("request must be a JSON object")
    prepared = copy.deepcopy(dict(request))
    _check_sizes(prepared)
    _check_inputs(prepared)
    _check_seed(prepared.get("seed"))
    if prepared.get("seed") is None:
        prepared["seed"] = secrets.randbits(SEED_BITS)
    if "pump" in prepared and asset is not None:
        prepared["pump"] = _complete_pump(prepared["pump"], asset)
    return prepared


#: Inline cost model of a Monte Carlo run over built-in distributions (seconds), measured on
#: the 2-core development machine under load (2026-12-02): ~1.5 ms per input (validation,
#: summary) plus ~0.5 µs per drawn sample per input. Deliberately pessimistic.
INLINE_SECONDS_PER_INPUT = 1.5e-3
INLINE_SECONDS_PER_DRAW = 5e-7


def _input_specs(request: Mapping[str, Any]) -> list[Any]:
    inputs = request.get("inputs")
    return list(inputs.values()) if isinstance(inputs, Mapping) else []


def _check_inputs(request: Mapping[str, Any]) -> None:
    limit = settings.SIMULATION_MAX_INPUTS
    count = len(_input_specs(request))
    if count > limit:
        raise SimulationError(f"{count} inputs exceed SIMULATION_MAX_INPUTS = {limit}")


def inline_seconds(choice: EngineChoice, request: Mapping[str, Any]) -> float | None:
    """Estimated wall time of running ``request`` inline, or None when it cannot be bounded.

    Only Monte Carlo over built-in distributions (``BUILTIN_DISTRIBUTIONS``: closed-form or
    tabulated inverse CDFs) has a cost known up front: ``inputs × INLINE_SECONDS_PER_INPUT +
    max_samples × inputs × INLINE_SECONDS_PER_DRAW``. A scipy distribution's inverse CDF may
    cost milliseconds per sample (``levy_stable`` integrates numerically: 20,000 samples ran
    111 s), and quantum runs are seconds at least, so those are never estimated.
    """
    if choice.engine != "monte_carlo":
        return None
    specs = _input_specs(request)
    if any(not isinstance(s, Mapping) or s.get("dist") not in BUILTIN_DISTRIBUTIONS
           for s in specs):
        return None
    n_inputs = max(len(specs), 1)
    draws = choice.cost["mc_plan"]["max_samples"] * n_inputs
    return n_inputs * INLINE_SECONDS_PER_INPUT + draws * INLINE_SECONDS_PER_DRAW


def runs_inline(choice: EngineChoice, request: Mapping[str, Any]) -> bool:
    """Whether a run is cheap enough to answer synchronously: Monte Carlo, first batch at most
    ``SIMULATION_SYNC_MAX_SAMPLES``, cap at most ``SIMULATION_SYNC_MAX_TOTAL`` samples, and an
    estimated cost (``inline_seconds``) within ``SIMULATION_SYNC_MAX_SECONDS``. Everything
    else is queued, where ``SIMULATION_MAX_SECONDS`` bounds it."""
    plan = choice.cost["mc_plan"]
    if (plan["n_samples"] > settings.SIMULATION_SYNC_MAX_SAMPLES
            or plan["max_samples"] > settings.SIMULATION_SYNC_MAX_TOTAL):
        return False
    seconds = inline_seconds(choice, request)
    return seconds is not None and seconds <= settings.SIMULATION_SYNC_MAX_SECONDS
