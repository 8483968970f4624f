"""Generic, data-driven what-if model for any asset without a physical model.

No relation between metrics is assumed. Fit (on the asset's normal-operation telemetry): per
metric, the training mean, standard deviation and range, whether it is non-negative, and how
well the what-if's own forecast rule fits the data (below). The normal band (mean ± 3 std) is
computed by the caller from the same data, as for the pump.

What-if (``GenericModel.what_if``): under ``hold`` each metric is its *recent distribution*,
calibrated on the asset's own latest readings by :func:`calibrate_recent`: the current level
(mean of the last ``LEVEL_ROWS`` readings, with its standard error as uncertainty) plus the
window's empirical spread around its mean (quantiles, ``N_QUANTILES``). An action changes
that through its *declared effect* (:mod:`.effects`: which metrics, how, by how much, with
what uncertainty), never through a fitted physics.

Fit quality (``fit_report()["metrics"][m]["coverage_90"]``): the forecast rule above is replayed
on the training data at ``COVERAGE_ORIGINS`` evenly spaced origins: the window before the origin
predicts a central 90 % interval, and the share of the next ``HORIZON`` readings inside it is
recorded (ideal 0.90; well below it, the recent distribution under-states where the metric goes
next; well above it, the interval is wider than needed, as for a drifting metric). This is the
empirical coverage of a prediction interval, the usual check of a probabilistic forecast's
calibration (Gneiting, Balabdaoui & Raftery, "Probabilistic forecasts, calibration and
sharpness", JRSS B 69, 2007).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .effects import MetricEffect, resolve_effect
from .errors import SimulationError
from .pump_fit import finite_float, is_constant
from .pump_model import calibrate_state

__all__ = ["GENERIC_STATE_KIND", "GenericModel", "calibrate_recent"]

GENERIC_STATE_KIND = "opstwin.generic_distribution"
STATE_VERSION = 1
MIN_ROWS = 10
LEVEL_ROWS = 10
N_QUANTILES = 101
COVERAGE_ORIGINS = 20
HORIZON = 10
COVERAGE_LOW, COVERAGE_HIGH = 0.8, 0.97  # around the nominal 0.90
DEFAULT_WINDOW = 300  # SIMULATION_CALIBRATION_WINDOW's default

ModelFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _finite_column(data: Mapping[str, Any], name: str) -> np.ndarray:
    try:
        values = np.asarray(data[name], dtype=float)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"column '{name}' must be numeric") from exc
    if values.ndim != 1:
        raise SimulationError(f"column '{name}' must be one-dimensional")
    return values[np.isfinite(values)]


def calibrate_recent(window: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The what-if state of a generic asset from a recent window.

    Args:
        window: metric -> 1-D array of the latest readings, oldest first (non-finite ignored).

    Returns:
        metric -> :func:`~.pump_model.calibrate_state`'s ``mean``/``std``/``n``/``last`` plus
        ``level`` (mean of the last ``LEVEL_ROWS`` readings), ``level_n`` (readings in it) and
        ``quantiles`` (``N_QUANTILES`` quantiles of the window minus its mean, metric units).

    Raises:
        SimulationError: non-numeric column, or a column without finite readings.
    """
    state = calibrate_state(window)
    for name, entry in state.items():
        values = _finite_column(window, name)
        tail = values[-LEVEL_ROWS:]
        entry |= {"level": float(tail.mean()), "level_n": int(tail.size),
                  "quantiles": np.percentile(values - values.mean(),
                                             np.linspace(0, 100, N_QUANTILES)).tolist()}
    return state


def _coverage(y: np.ndarray, window: int) -> float | None:
    """Share of the next ``HORIZON`` readings inside the 90 % interval the forecast rule of
    :func:`calibrate_recent` gives at evenly spaced origins of ``y``; None if ``y`` is short."""
    window = min(window, len(y) // 2)
    if window < MIN_ROWS or len(y) - window < HORIZON:
        return None
    inside = []
    for t in np.unique(np.linspace(window, len(y) - HORIZON, COVERAGE_ORIGINS).astype(int)):
        past, future = y[t - window : t], y[t : t + HORIZON]
        low, high = np.percentile(past - past.mean(), [5, 95]) + past[-LEVEL_ROWS:].mean()
        inside.append(np.mean((future >= low) & (future <= high)))
    return float(np.mean(inside))


def _note(coverage: float | None, constant: bool) -> str:
    if constant:
        return "constant in the training data: predicted as its recent value"
    if coverage is None:
        return "too few readings to check the forecast: predicted from its recent distribution"
    if coverage < COVERAGE_LOW:
        verdict = "under-states where it goes next (sudden shifts or growing spread)"
    elif coverage > COVERAGE_HIGH:
        verdict = "wider than needed (a drifting metric: the window spans several levels)"
    else:
        verdict = "fits"
    return (f"recent distribution; its 90 % interval covered {coverage:.0%} of the next "
            f"{HORIZON} readings in training: {verdict}")


@dataclass
class GenericModel:
    """Per-metric distribution model; build with :meth:`fit` or :meth:`from_state`.

    ``profiles``: metric -> ``{"mean", "std", "min", "max", "non_negative", "constant",
    "coverage_90", "note"}`` (metric units); ``n_rows``: training readings of the longest
    metric.
    """

    profiles: dict[str, dict[str, Any]]
    n_rows: int

    @classmethod
    def fit(cls, data: Mapping[str, Any], *, window: int = DEFAULT_WINDOW) -> GenericModel:
        """Fit on normal-operation telemetry ``data`` (metric -> 1-D array, any lengths).

        ``window`` is the recent-window length what-if runs calibrate on (rows), used to
        replay the forecast rule for ``coverage_90``. Raises SimulationError: no metric, a
        non-numeric column, or a metric with fewer than ``MIN_ROWS`` finite readings.
        """
        if not isinstance(data, Mapping) or not data:
            raise SimulationError("fit data must be a non-empty dict of metric -> array")
        profiles = {}
        for name in data:
            y = _finite_column(data, name)
            if y.size < MIN_ROWS:
                raise SimulationError(f"metric '{name}' has {y.size} finite readings; "
                                      f"{MIN_ROWS} needed to fit")
            constant, coverage = is_constant(y), _coverage(y, window)
            profiles[str(name)] = {
                "mean": float(y.mean()), "std": float(y.std(ddof=1)), "min": float(y.min()),
                "max": float(y.max()), "non_negative": bool(y.min() >= 0), "constant": constant,
                "coverage_90": coverage, "note": _note(coverage, constant)}
        return cls(profiles, max(len(_finite_column(data, n)) for n in data))

    def fit_report(self) -> dict[str, Any]:
        """Fit quality: per metric ``coverage_90``, ``resid_std`` (the training std: the
        spread a what-if draws from), ``r2`` None (no regression) and a plain-language
        ``note``; ``coverage_90`` overall (median over metrics) and a one-line ``summary``."""
        metrics = {m: {"r2": None, "resid_std": p["std"], "coverage_90": p["coverage_90"],
                       "uses_drivers": False, "slopes": {}, "note": p["note"]}
                   for m, p in self.profiles.items()}
        known = [p["coverage_90"] for p in self.profiles.values()
                 if p["coverage_90"] is not None]
        overall = float(np.median(known)) if known else None
        summary = ("generic model (each metric's recent distribution, declared action effects)"
                   + (f": its 90 % interval covered {overall:.0%} of the next readings in "
                      "training (ideal 90 %)" if overall is not None else ""))
        return {"n_rows": self.n_rows, "model": "generic", "coverage_90": overall,
                "metrics": metrics, "drivers": {}, "notes": [], "summary": summary}

    def to_state(self) -> dict[str, Any]:
        """JSON state for a database JSON field; inverse of :meth:`from_state`."""
        return {"kind": GENERIC_STATE_KIND, "version": STATE_VERSION, "n_rows": self.n_rows,
                "profiles": {m: dict(p) for m, p in self.profiles.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GenericModel:
        """Rebuild from :meth:`to_state`. Raises SimulationError on another kind/version."""
        if not isinstance(state, Mapping) or state.get("kind") != GENERIC_STATE_KIND:
            raise SimulationError(f"model state is not a '{GENERIC_STATE_KIND}' state")
        if state.get("version") != STATE_VERSION:
            raise SimulationError(f"unsupported model state version {state.get('version')!r}")
        try:
            return cls({str(m): dict(p) for m, p in state["profiles"].items()},
                       int(state["n_rows"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SimulationError(f"malformed model state: {exc!r}") from exc

    def what_if(self, action: str, params: Mapping[str, Any] | None, state: Mapping[str, Any],
                effect: Mapping[str, Any] | None = None) -> tuple[ModelFn, dict[str, Any]]:
        """Monte Carlo model and inputs of ``action`` on this asset.

        Args:
            action: the action's name. params: its parameters.
            state: metric -> :func:`calibrate_recent` entry (a :func:`calibrate_state` entry
                works too: the spread is then normal with the window's std); a metric
                missing from it is drawn from its training distribution.
            effect: the action's declared effect (:mod:`.effects` shape); the ``EFFECTS``
                table's entry when None.

        Returns:
            ``(model_fn, inputs)`` for :func:`~.montecarlo.run_monte_carlo`; outputs every
            fitted metric (non-negative metrics clipped at 0).

        Raises:
            SimulationError: no declared effect, bad parameters or a malformed state.
        """
        effects = resolve_effect(action, params, effect)
        inputs: dict[str, Any] = {}
        for metric, profile in self.profiles.items():
            level, spread = self._inputs(metric, profile, state)
            inputs[f"level:{metric}"], inputs[f"noise:{metric}"] = level, spread
        for k, item in enumerate(effects):
            if item.gain is not None:
                inputs[f"gain:{k}"] = item.gain
        profiles = self.profiles

        def model(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = {}
            for metric, profile in profiles.items():
                value = samples[f"level:{metric}"] + samples[f"noise:{metric}"]
                for k, item in enumerate(effects):
                    if item.applies_to(metric):
                        gain = samples.get(f"gain:{k}", 1.0)
                        value = _apply(item, value, gain, profile["mean"])
                out[metric] = np.maximum(value, 0.0) if profile["non_negative"] else value
            return out

        return model, inputs

    def moved_metrics(self, action: str, params: Mapping[str, Any] | None,
                      effect: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The fitted metrics ``action``'s declared effect moves (:mod:`.effects`: an item
        naming the metric or ``"*"``), in profile order; none for ``hold`` and the restore
        actions (no effect items). Raises SimulationError as :meth:`what_if`."""
        effects = resolve_effect(action, params, effect)
        return tuple(m for m in self.profiles if any(e.applies_to(m) for e in effects))

    def non_negative(self) -> frozenset[str]:
        """The outputs :meth:`what_if` clips at 0 (metrics never negative in training)."""
        return frozenset(m for m, p in self.profiles.items() if p["non_negative"])

    @staticmethod
    def _inputs(metric: str, profile: Mapping[str, Any],
                state: Mapping[str, Any]) -> tuple[dict, dict]:
        entry = state.get(metric) if isinstance(state, Mapping) else None
        if not isinstance(entry, Mapping):
            mean, std, n, quantiles = profile["mean"], profile["std"], 1, None
        else:
            mean = finite_float(entry.get("level", entry.get("mean")), f"state['{metric}']")
            std = finite_float(entry.get("std", 0.0), f"state['{metric}'].std")
            n, quantiles = entry.get("level_n", entry.get("n", 1)), entry.get("quantiles")
        tiny = 1e-9 * max(1.0, abs(mean))
        level = {"dist": "normal",
                 "params": {"mean": mean, "std": max(std / max(float(n), 1.0) ** 0.5, tiny)}}
        if quantiles is not None and float(np.ptp(quantiles)) > tiny:
            return level, {"dist": "empirical", "params": {"quantiles": list(quantiles)}}
        return level, {"dist": "normal", "params": {"mean": 0.0, "std": max(std, tiny)}}


def _apply(item: MetricEffect, value: np.ndarray, gain: Any, centre: float) -> np.ndarray:
    share = item.amount * gain
    if item.mode == "scale":
        return value * (1.0 + item.direction * share)
    if item.mode == "toward_normal":
        return value + share * (centre - value)
    return value + item.direction * share
