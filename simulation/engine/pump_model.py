"""What-if model of the SKAB water-pump testbed (Katser & Kozitsin, SKAB, 2020).

Fit (on normal-operation telemetry, e.g. the first 400 rows of a SKAB file): the operating
point is set by two drivers, the circulation flow ``"Volume Flow RateRMS"`` (L/min) and the
motor ``Current`` (A). ``Current`` is fitted on the flow; ``Pressure`` (bar),
``Accelerometer1RMS``/``Accelerometer2RMS`` (g), ``Temperature`` and ``Thermocouple`` (deg C)
are fitted on both drivers (linear least squares, :mod:`.pump_fit`); ``Voltage`` (V), set by
the supply, is reported from its own distribution only. Constant driver columns
are dropped (intercept-only fit, stated in the report).

Honesty note: within one normal SKAB run the drivers barely move, so most within-run R^2 are
close to 0 (see ``fit_report()``); such metrics are predicted from their own recent
distribution and the actions only move them when the fitted slope is supported by the data
(``R^2 >= R2_MIN``). Fitting on data that spans several operating points (e.g. a valve run and
the anomaly-free run together) gives real slopes.

What-if (``PumpModel.what_if``): inputs are the drivers ``~ normal(state mean, s)`` with
``s = max(state std, training std)`` (state calibrated from a recent window by
:func:`calibrate_state`; a short window under-states the spread of an autocorrelated driver
over the next minutes) and one empirical residual distribution per dependent metric. An
action transforms the sampled drivers ``(F, I)``:

* ``hold``: unchanged (baseline).
* ``reduce_load`` ``{"fraction": f}``: ``F' = (1-f) F``, ``I' = (1-f) I``.
* ``emergency_stop``: ``F' = I' = 0`` (static steady state; the linear model extrapolates far
  outside its training range and ignores thermal inertia, so treat it as indicative).
* ``open_valve`` ``{"fraction": f}``: ``F' = F + f (F_normal - F)`` with ``F_normal`` the
  training mean flow; ``I' = I + b_IF (F' - F)`` when Current depends on flow.

Cross-run caveat: slopes fitted on pooled runs also absorb run-to-run differences (recording
day, ambient temperature), and slopes fitted within one run are local to the narrow driver
range seen in training (``fit_report()["drivers"]`` gives min/max); actions that move the
drivers outside that range extrapolate.

Each dependent metric is ``centre + sum_d b_d (D'_d - mean_d) + noise`` (slopes only when
``uses_drivers``). ``centre`` starts from the model's prediction at the state (the fitted value
at the state's drivers, or the training mean for metrics that do not use the drivers) and
moves to the metric's recent mean by the weight ``w = max(0, 1 - 1/z^2)``, ``z`` being the
recent deviation in standard errors (``resid_std / sqrt(n)``): deviations at noise level
(white-noise sensors such as the quantised Pressure) are ignored, real level shifts (slow
temperature drift) are followed. Flow, current and vibration RMS are clipped at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SimulationError
from .pump_fit import R2_MIN, MetricFit, finite_float, fit_metric, is_constant

__all__ = [
    "ACTIONS",
    "CURRENT",
    "DEPENDENTS",
    "DRIVERS",
    "FLOW",
    "OWN_DISTRIBUTION",
    "PumpModel",
    "calibrate_state",
]

FLOW = "Volume Flow RateRMS"
CURRENT = "Current"
DRIVERS: tuple[str, ...] = (FLOW, CURRENT)
DEPENDENTS: tuple[str, ...] = (
    "Pressure",
    "Current",
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Temperature",
    "Thermocouple",
)
#: Metrics reported but never tied to the drivers: the motor voltage is set by the supply, so
#: it is predicted from its own recent distribution (intercept-only fit).
OWN_DISTRIBUTION: tuple[str, ...] = ("Voltage",)
ACTIONS: tuple[str, ...] = ("hold", "reduce_load", "emergency_stop", "open_valve")
NON_NEGATIVE = frozenset({FLOW, CURRENT, "Accelerometer1RMS", "Accelerometer2RMS"})
MIN_ROWS = 10
STATE_KIND = "opstwin.skab_pump_linear"
STATE_VERSION = 1

ModelFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _column(data: Mapping[str, Any], name: str) -> np.ndarray:
    try:
        arr = np.asarray(data[name], dtype=float)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"column '{name}' must be numeric") from exc
    if arr.ndim != 1:
        raise SimulationError(f"column '{name}' must be one-dimensional")
    return arr


def calibrate_state(window: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Summarise a recent telemetry window as the what-if state.

    Args:
        window: metric -> 1-D array of recent readings (any length >= 1; the window length is
            the caller's choice). Non-finite readings are ignored.

    Returns:
        metric -> ``{"mean", "std" (ddof=1, 0 for one reading), "n", "last"}``.

    Raises:
        SimulationError: non-numeric column or no finite readings in a column.
    """
    state = {}
    for name in window:
        values = _column(window, name)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise SimulationError(f"window column '{name}' has no finite readings")
        state[str(name)] = {
            "mean": float(finite.mean()),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "n": int(finite.size),
            "last": float(finite[-1]),
        }
    return state


def _training_table(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(data, Mapping):
        raise SimulationError("fit data must be a dict of metric -> array")
    missing = [d for d in DRIVERS if d not in data]
    if missing:
        raise SimulationError(f"fit data lacks driver column(s) {missing}")
    modelled = (*DEPENDENTS, *OWN_DISTRIBUTION)
    names = [*DRIVERS, *(m for m in modelled if m in data and m not in DRIVERS)]
    table = {name: _column(data, name) for name in names}
    lengths = {arr.size for arr in table.values()}
    if len(lengths) != 1:
        raise SimulationError(f"fit columns have different lengths {sorted(lengths)}")
    keep = np.all(np.isfinite(np.vstack(list(table.values()))), axis=0)
    if int(keep.sum()) < MIN_ROWS:
        raise SimulationError(f"need at least {MIN_ROWS} complete rows to fit, got {keep.sum()}")
    return {name: arr[keep] for name, arr in table.items()}


def _driver_stats(values: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "min": float(values.min()),
        "max": float(values.max()),
        "constant": is_constant(values),
    }


def _fraction(action: str, params: Mapping[str, Any]) -> float:
    if set(params) != {"fraction"}:
        raise SimulationError(f"action '{action}' needs exactly the parameter 'fraction'")
    fraction = finite_float(params["fraction"], f"{action}.fraction")
    if not 0.0 < fraction <= 1.0:
        raise SimulationError(f"{action}.fraction must be in (0, 1], got {fraction}")
    return fraction


def _shrink(prediction: float, recent: float, n: Any, noise_std: float) -> float:
    """Recent mean shrunk toward the model's prediction (positive-part James-Stein-type
    weight, Efron & Morris, JASA 68, 1973): ``w = max(0, 1 - 1/z^2)`` with
    ``z = (recent - prediction) / (noise_std / sqrt(n))``. Without ``n`` the recent mean is
    used as is."""
    if isinstance(n, bool) or not isinstance(n, int | float) or n < 1 or noise_std <= 0:
        return recent
    z2 = ((recent - prediction) / (noise_std / float(n) ** 0.5)) ** 2
    weight = max(0.0, 1.0 - 1.0 / z2) if z2 > 0 else 0.0
    return prediction + weight * (recent - prediction)


@dataclass
class PumpModel:
    """Linear driver model of the SKAB pump with empirical residual noise.

    Build with :meth:`fit` or :meth:`from_state`. Attributes: ``fits`` (metric ->
    :class:`~.pump_fit.MetricFit`), ``drivers`` (driver -> training mean/std/min/max/constant),
    ``n_rows`` (training rows used), ``notes`` (model-level remarks).
    """

    fits: dict[str, MetricFit]
    drivers: dict[str, dict[str, Any]]
    n_rows: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, data: Mapping[str, Any]) -> PumpModel:
        """Fit on normal-operation telemetry.

        Args:
            data: metric -> 1-D array (same length). Must contain the drivers
                ``"Volume Flow RateRMS"`` and ``"Current"``; any of ``DEPENDENTS`` present are
                fitted on the drivers, ``"Voltage"`` (if present) intercept-only, other
                columns are ignored. Rows with a non-finite value are dropped.

        Raises:
            SimulationError: missing driver, non-numeric or ragged columns, < 10 rows.
        """
        table = _training_table(data)
        drivers = {d: _driver_stats(table[d]) for d in DRIVERS}
        constant = {d: drivers[d]["constant"] for d in DRIVERS}
        notes = [
            f"driver '{d}' is constant ({drivers[d]['mean']:g}) in the training data: dropped "
            "as a regressor, dependent metrics fall back to intercept-only on it"
            for d in DRIVERS
            if constant[d]
        ]
        fits = {}
        for metric in (m for m in (*DEPENDENTS, *OWN_DISTRIBUTION) if m in table):
            candidates = {CURRENT: (FLOW,), **dict.fromkeys(OWN_DISTRIBUTION, ())}.get(
                metric, DRIVERS
            )
            cands = {d: table[d] for d in candidates}
            fits[metric] = fit_metric(metric, table[metric], cands, constant)
        return cls(fits=fits, drivers=drivers, n_rows=int(table[FLOW].size), notes=notes)

    def fit_report(self) -> dict[str, Any]:
        """Fit quality per metric: R^2, residual std, slopes (+ std errors), whether the
        slopes are used, and a plain-language note; plus driver ranges and model notes."""
        metrics = {}
        for name, fit in self.fits.items():
            metrics[name] = {
                "r2": fit.r2,
                "resid_std": fit.resid_std,
                "intercept": fit.intercept,
                "slopes": dict(fit.slopes),
                "slope_stderr": dict(fit.slope_stderr),
                "drivers_used": list(fit.drivers),
                "uses_drivers": fit.uses_drivers,
                "note": fit.note,
            }
        return {
            "n_rows": self.n_rows,
            "r2_min": R2_MIN,
            "drivers": {d: dict(s) for d, s in self.drivers.items()},
            "metrics": metrics,
            "notes": list(self.notes),
        }

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state (for a DB JSON field); inverse of :meth:`from_state`."""
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "n_rows": self.n_rows,
            "drivers": {d: dict(s) for d, s in self.drivers.items()},
            "fits": {m: f.to_dict() for m, f in self.fits.items()},
            "notes": list(self.notes),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PumpModel:
        """Rebuild a model from :meth:`to_state` output.

        Raises:
            SimulationError: wrong kind/version or malformed content.
        """
        if not isinstance(state, Mapping) or state.get("kind") != STATE_KIND:
            raise SimulationError(f"model state is not a '{STATE_KIND}' state")
        if state.get("version") != STATE_VERSION:
            raise SimulationError(f"unsupported model state version {state.get('version')!r}")
        try:
            drivers = {d: dict(state["drivers"][d]) for d in DRIVERS}
            fits = {m: MetricFit.from_dict(dict(f)) for m, f in state["fits"].items()}
            return cls(fits, drivers, int(state["n_rows"]), list(state.get("notes", [])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SimulationError(f"malformed model state: {exc!r}") from exc

    def what_if(
        self, action: str, params: Mapping[str, Any] | None, state: Mapping[str, Any]
    ) -> tuple[ModelFn, dict[str, dict[str, Any]]]:
        """Build the Monte Carlo model and inputs for a candidate action.

        Args:
            action: one of ``ACTIONS``. params: ``{"fraction": f}`` (0 < f <= 1) for
                ``reduce_load``/``open_valve``, ``{}`` or None otherwise.
            state: metric -> ``{"mean", "std", ...}`` from :func:`calibrate_state`; must
                contain both drivers.

        Returns:
            ``(model_fn, inputs)`` for :func:`~.montecarlo.run_monte_carlo`; the model
            outputs the flow, the current and every fitted dependent metric.

        Raises:
            SimulationError: unknown action, bad params, or a state lacking a driver.
        """
        transform = self._transform(action, dict(params or {}))
        centres = self._centres(state)
        inputs = {d: self._driver_input(d, state) for d in DRIVERS}
        noisy = [m for m in self.fits if m != CURRENT]
        for metric in noisy:
            quantiles = self.fits[metric].resid_quantiles
            inputs[f"noise:{metric}"] = {"dist": "empirical", "params": {"quantiles": quantiles}}
        means = {d: centres[d] for d in DRIVERS}

        def model(samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            flow, current = transform(samples[FLOW], samples[CURRENT])
            moved = {FLOW: flow - means[FLOW], CURRENT: current - means[CURRENT]}
            out = {FLOW: flow, CURRENT: current}
            for metric in noisy:
                fit = self.fits[metric]
                value = centres[metric] + samples[f"noise:{metric}"]
                if fit.uses_drivers:
                    value = value + sum(b * moved[d] for d, b in fit.slopes.items())
                out[metric] = value
            return {m: np.maximum(v, 0.0) if m in NON_NEGATIVE else v for m, v in out.items()}

        return model, inputs

    def moved_metrics(self, action: str, params: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The metrics ``action`` moves in :meth:`what_if`, in output order.

        ``hold`` moves none. ``reduce_load`` and ``emergency_stop`` move both drivers,
        ``open_valve`` the flow (and the current when its fit has a flow slope); a dependent
        metric moves when its fit applies a slope on a moved driver. Every other output is
        drawn from the state's distribution whatever the action: no modelled effect.

        Raises:
            SimulationError: unknown action or bad params (as :meth:`what_if`).
        """
        self._transform(action, dict(params or {}))
        if action == "hold":
            return ()
        current_fit = self.fits.get(CURRENT)
        moved = {FLOW}
        if action != "open_valve" or (current_fit is not None and current_fit.uses_drivers
                                      and current_fit.slopes.get(FLOW, 0.0) != 0.0):
            moved.add(CURRENT)
        for metric, fit in self.fits.items():
            if metric not in DRIVERS and fit.uses_drivers and \
                    any(b != 0.0 and d in moved for d, b in fit.slopes.items()):
                moved.add(metric)
        return tuple(m for m in dict.fromkeys((*DRIVERS, *self.fits)) if m in moved)

    def non_negative(self) -> frozenset[str]:
        """The outputs :meth:`what_if` clips at 0 (flow, current, vibration RMS)."""
        return NON_NEGATIVE

    def _state_entry(self, state: Mapping[str, Any], metric: str) -> tuple[float, float]:
        entry = state.get(metric) if isinstance(state, Mapping) else None
        if not isinstance(entry, Mapping) or "mean" not in entry:
            raise SimulationError(f"state lacks '{metric}' (need its recent mean and std)")
        mean = finite_float(entry["mean"], f"state['{metric}'].mean")
        std = finite_float(entry.get("std", 0.0), f"state['{metric}'].std")
        if std < 0:
            raise SimulationError(f"state['{metric}'].std must be >= 0, got {std}")
        return mean, std

    def _driver_input(self, driver: str, state: Mapping[str, Any]) -> dict[str, Any]:
        mean, std = self._state_entry(state, driver)
        # A short window under-states how far an autocorrelated driver wanders over the next
        # minutes (and is 0 for a constant window): never go below the training spread.
        std = max(std, self.drivers[driver]["std"]) or 1e-3 * max(1.0, abs(mean))
        return {"dist": "normal", "params": {"mean": mean, "std": std}}

    def _centres(self, state: Mapping[str, Any]) -> dict[str, float]:
        centres = {d: self._state_entry(state, d)[0] for d in DRIVERS}
        for metric, fit in self.fits.items():
            if metric in DRIVERS:
                continue
            if fit.uses_drivers:
                pred = fit.intercept + sum(b * centres[d] for d, b in fit.slopes.items())
            else:
                pred = fit.mean
            if metric in state:
                recent = self._state_entry(state, metric)[0]
                pred = _shrink(pred, recent, state[metric].get("n"), fit.resid_std)
            centres[metric] = pred
        return centres

    def _transform(
        self, action: str, params: dict[str, Any]
    ) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        if action not in ACTIONS:
            raise SimulationError(f"unknown action '{action}'; use one of {list(ACTIONS)}")
        if action in ("hold", "emergency_stop") and params:
            raise SimulationError(f"action '{action}' takes no parameters, got {sorted(params)}")
        if action == "hold":
            return lambda f, i: (f, i)
        if action == "emergency_stop":
            return lambda f, i: (0.0 * f, 0.0 * i)
        fraction = _fraction(action, params)
        if action == "reduce_load":
            return lambda f, i: ((1.0 - fraction) * f, (1.0 - fraction) * i)
        target = float(self.drivers[FLOW]["mean"])
        current_fit = self.fits.get(CURRENT)
        slope = 0.0
        if current_fit is not None and current_fit.uses_drivers:
            slope = current_fit.slopes.get(FLOW, 0.0)

        def open_valve(f: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            new_flow = f + fraction * (target - f)
            return new_flow, i + slope * (new_flow - f)

        return open_valve
