"""What-if models of assets: fit them, calibrate the current state, run an action's what-if.

``run_what_if`` is what ``policy.services`` calls for every proposal (signature and behaviour
are a contract with the policy app). Fitting writes the asset's ``WhatIfModel`` through
``record_change`` (resource ``whatif_model``).

Which model: a pump whose telemetry has the SKAB drivers (flow and motor current) gets the
physical ``PumpModel`` (kind ``pump``); every other asset, and a pump without those drivers, the
data-driven ``GenericModel`` (kind ``generic``: each metric's recent distribution, the action's
declared effect from ``simulation.engine.effects``), so no what-if fails for lack of a model.
The run's result names the model and how well it fits (``result["model"]``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from simulation.engine import (
    DRIVERS,
    GenericModel,
    PumpModel,
    SimulationError,
    calibrate_recent,
    calibrate_state,
    run_monte_carlo,
    sample_inputs,
)
from simulation.engine.effects import resolve_effect
from simulation.errors import RunNotPermitted
from simulation.models import SimulationRun, SimulationStatus, WhatIfModel
from simulation.services.common import ACTOR, audit_run, is_user
from telemetry.series import load_series
from twins.choices import AssetKind
from twins.ledger import record_change
from twins.models import Asset

BAND_SIGMAS = 3.0
MIN_FIT_ROWS = 10  # PumpModel.fit's own minimum
REFIT_PERMISSION = "simulation.change_whatifmodel"
WHAT_IF_REASON = "{kind} what-if of a candidate action: Monte Carlo (the policy path)"
PUMP, GENERIC = "pump", "generic"


class NotEnoughTelemetry(SimulationError):
    """The asset has too little telemetry to fit or calibrate a model."""


def model_json(model: WhatIfModel) -> dict:
    """whatif_model JSON for the audit entry and the change feed (the state is left out)."""
    return {"id": model.pk, "asset": str(model.asset), "kind": model.kind,
            "n_rows": model.n_rows, "normal_from": model.normal_from,
            "normal_to": model.normal_to, "fit_report": model.fit_report, "bands": model.bands}


def _bands(X: np.ndarray, metrics: list[str]) -> dict[str, list[float]]:
    """Training mean ± 3 std per metric with readings (missing readings, NaN, ignored)."""
    seen = [j for j in range(len(metrics)) if np.isfinite(X[:, j]).any()]
    mean, std = np.nanmean(X[:, seen], axis=0), np.nanstd(X[:, seen], axis=0)
    return {metrics[j]: [float(mean[k] - BAND_SIGMAS * std[k]),
                         float(mean[k] + BAND_SIGMAS * std[k])] for k, j in enumerate(seen)}


def model_kind(asset: Asset, metrics: list[str]) -> str:
    """The what-if model family for ``asset``: its type's ``whatif_model`` when set and
    usable, else ``"pump"`` for a pump asset whose ``metrics`` include the pump model's
    drivers, else ``"generic"``: the pump model is for pumps only, and needs its drivers."""
    chosen = asset.asset_type.whatif_model if asset.asset_type_id else ""
    if chosen == GENERIC:
        return GENERIC
    if asset.kind == AssetKind.PUMP and all(d in metrics for d in DRIVERS):
        return PUMP
    return GENERIC


def asset_type_errors(asset_type) -> dict[str, list[str]]:
    """``twins.asset_types`` validator: a known what-if family, the pump model only for pumps
    (it needs the pump's drivers: ``simulation.engine.pump_model``)."""
    if asset_type.whatif_model not in ("", PUMP, GENERIC):
        return {"whatif_model": [f"one of '', {PUMP!r}, {GENERIC!r}"]}
    if asset_type.whatif_model == PUMP and asset_type.base_kind != AssetKind.PUMP:
        return {"whatif_model": ["the pump model needs a pump (base_kind pump)"]}
    problems = []
    for item in asset_type.actions:
        effect = item.get("effect")
        if effect is None:
            continue
        try:
            effects = effect.get("effects") if isinstance(effect, dict) else None
            used = {e["amount"]["parameter"] for e in effects or []
                    if isinstance(e, dict) and isinstance(e.get("amount"), dict)
                    and isinstance(e["amount"].get("parameter"), str)}
            resolve_effect(item["action"], dict.fromkeys(used, 0.5), effect)
        except SimulationError as exc:
            problems.append(f"{item['action']!r} effect: {exc}")
    return {"actions": problems} if problems else {}


def _fit(kind: str, X: np.ndarray, metrics: list[str]) -> PumpModel | GenericModel:
    if kind == PUMP:
        return PumpModel.fit({m: X[:, j] for j, m in enumerate(metrics)})
    enough = [j for j in range(len(metrics)) if np.isfinite(X[:, j]).sum() >= MIN_FIT_ROWS]
    if not enough:
        raise NotEnoughTelemetry(f"no metric has {MIN_FIT_ROWS} readings to fit")
    return GenericModel.fit({metrics[j]: X[:, j] for j in enough},
                            window=settings.SIMULATION_CALIBRATION_WINDOW)


def _store_model(asset: Asset, X: np.ndarray, metrics: list[str], *, actor, reason: str = "",
                 period: tuple[datetime, datetime] | None = None) -> WhatIfModel:
    """Fit the asset's model (``model_kind``) on ``X`` ((n, len(metrics)) float64, metric
    units, NaN where a metric has no reading) and save it."""
    kind = model_kind(asset, metrics)
    model = _fit(kind, X, metrics)
    start, end = period or (None, None)
    with transaction.atomic():
        before = WhatIfModel.objects.select_for_update().filter(asset=asset).first()
        obj, created = WhatIfModel.objects.update_or_create(asset=asset, defaults={
            "kind": kind, "state": model.to_state(), "fit_report": model.fit_report(),
            "bands": _bands(X, metrics), "n_rows": len(X), "normal_from": start,
            "normal_to": end})
        record_change(actor=actor, action="whatif_model.fit", resource_type="whatif_model",
                      resource_id=obj.pk, operation="created" if created else "updated",
                      twin=asset.twin, before=model_json(before) if before else None,
                      after=model_json(obj), reason=reason)
    return obj


def fit_whatif_model(asset: Asset, *, rows: int | None = None, actor=ACTOR) -> WhatIfModel:
    """Fit (or re-fit) the asset's what-if model on its first ``rows`` telemetry rows.

    ``rows`` defaults to ``SIMULATION_FIT_ROWS`` (400: SKAB's convention of a normal-operation
    calibration window at the start of each run). Raises ``NotEnoughTelemetry`` when fewer than
    ``rows // 2`` rows exist.
    """
    rows = rows or settings.SIMULATION_FIT_ROWS
    series = load_series(asset, after=None, history=0)
    if len(series.ts) < max(rows // 2, MIN_FIT_ROWS):
        raise NotEnoughTelemetry(f"{asset} has {len(series.ts)} rows; {rows // 2} needed to fit")
    return _store_model(asset, series.X[:rows], series.metrics, actor=actor)


def refit_whatif_model(asset: Asset, *, start: datetime, end: datetime, actor,
                       reason: str = "") -> WhatIfModel:
    """Re-fit the asset's what-if model on a declared normal-operation period ``[start, end]``.

    Every reading with ``start <= ts <= end`` (sensor time) is used. A user ``actor`` needs
    ``simulation.change_whatifmodel``. Raises RunNotPermitted, SimulationError (``end`` not
    after ``start``) or NotEnoughTelemetry (fewer than 10 readings in the period).
    """
    if is_user(actor) and not actor.has_perm(REFIT_PERMISSION):
        raise RunNotPermitted(f"{actor.get_username()} lacks {REFIT_PERMISSION}")
    if not start < end:
        raise SimulationError("the normal period must end after it starts")
    series = load_series(asset, after=start - timedelta(microseconds=1), history=0, until=end)
    if len(series.ts) < MIN_FIT_ROWS:
        raise NotEnoughTelemetry(f"{asset} has {len(series.ts)} readings between {start} and "
                                 f"{end}; {MIN_FIT_ROWS} needed to fit")
    return _store_model(asset, series.X, series.metrics, actor=actor, reason=reason,
                        period=(start, end))


def recent_state(asset: Asset, *, at, window: int | None = None, kind: str = PUMP) -> dict:
    """Current state calibrated on the ``window`` rows up to ``at``: per-metric mean/std/n/last
    (``calibrate_state``), plus level and spread quantiles for a ``generic`` model
    (``calibrate_recent``); metrics without a reading in the window are left out."""
    window = window or settings.SIMULATION_CALIBRATION_WINDOW
    series = load_series(asset, after=at, history=window)
    X = series.X[: series.n_history]
    if len(X) < 10:
        raise NotEnoughTelemetry(f"{asset} has only {len(X)} rows before {at}")
    calibrate = calibrate_recent if kind == GENERIC else calibrate_state
    return calibrate({m: X[:, j] for j, m in enumerate(series.metrics)
                      if np.isfinite(X[:, j]).any()})


def constraints_for(model: WhatIfModel, metrics: list[str]) -> list[dict]:
    """Keep-in-band constraints (both sides of the calibration band) for ``metrics``.

    Raises SimulationError for a metric the model has no band for (no readings when fitted).
    """
    constraints = []
    for metric in metrics:
        if metric not in model.bands:
            raise SimulationError(f"the what-if model has no normal band for '{metric}'")
        low, high = model.bands[metric]
        constraints += [{"metric": metric, "op": ">", "limit": high},
                        {"metric": metric, "op": "<", "limit": low}]
    return constraints


def asset_model(asset: Asset) -> WhatIfModel:
    """The asset's stored model, (re-)fitted when missing or of the wrong kind (e.g. a pump
    model stored for a valve before generic models existed)."""
    model = WhatIfModel.objects.filter(asset=asset).first()
    if model is None or model.kind != model_kind(asset, list(model.bands) or asset.metric_names):
        model = fit_whatif_model(asset)
    return model


def model_summary(model: WhatIfModel) -> dict:
    """Which model a run used and how well it fits, for the run's result and the proposal page:
    ``{"kind", "n_rows", "summary"}`` (and ``coverage_90`` for a generic model)."""
    report = model.fit_report or {}
    if model.kind == GENERIC:
        return {"kind": GENERIC, "n_rows": model.n_rows, "coverage_90": report.get("coverage_90"),
                "summary": report.get("summary", "generic model")}
    r2 = [m["r2"] for m in report.get("metrics", {}).values() if m.get("r2") is not None]
    driven = sum(bool(m.get("uses_drivers")) for m in report.get("metrics", {}).values())
    text = (f"SKAB pump model (linear on flow and current): {driven} of {len(r2)} metrics "
            f"driven (R² >= {report.get('r2_min', 0.1)})"
            + (f", median R² {float(np.median(r2)):.2f}" if r2 else ""))
    return {"kind": PUMP, "n_rows": model.n_rows, "summary": text}


def _model_fn(model: WhatIfModel, asset: Asset, action: str, parameters: dict, at,
              effect: dict | None):
    state = recent_state(asset, at=at, kind=model.kind)
    if model.kind == GENERIC:
        fn, inputs = GenericModel.from_state(model.state).what_if(action, parameters, state,
                                                                  effect)
    else:
        fn, inputs = PumpModel.from_state(model.state).what_if(action, parameters, state)
    return fn, inputs, state


def _moved_metrics(model: WhatIfModel, action: str, parameters: dict,
                  effect: dict | None) -> tuple[str, ...]:
    if model.kind == GENERIC:
        return GenericModel.from_state(model.state).moved_metrics(action, parameters, effect)
    return PumpModel.from_state(model.state).moved_metrics(action, parameters)


def _what_if_result(run: SimulationRun, asset: Asset, action: str, parameters: dict,
                    metrics: list[str], at, effect: dict | None = None) -> None:
    model = asset_model(asset)
    run.engine_reason = WHAT_IF_REASON.format(kind=model.kind)
    fn, inputs, state = _model_fn(model, asset, action, parameters, at, effect)
    constraints = constraints_for(model, metrics)
    result = run_monte_carlo(fn, inputs, constraints=constraints, seed=run.seed,
                             n_samples=run.request["n_samples"]).to_dict()
    result["model"] = model_summary(model)
    run.request |= {"state": state, "constraints": constraints, "model": model.kind,
                    "moved": list(_moved_metrics(model, action, parameters, effect))}
    if effect is not None:
        run.request["effect"] = effect
    run.result, run.status = result, SimulationStatus.SUCCEEDED
    run.n_samples = run.samples_done = run.samples_target = result["n_samples"]


def run_what_if(
    *, asset: Asset, action: str, parameters: dict, metrics: list[str], at, anomaly=None,
    seed: int | None = None, n_samples: int | None = None, effect: dict | None = None,
) -> SimulationRun:
    """Monte Carlo what-if of ``action`` on ``asset``, calibrated on telemetry up to ``at``.

    Inputs are the asset's current state (recent window, ``SIMULATION_CALIBRATION_WINDOW`` rows)
    pushed through its fitted model (``model_kind``: the pump model, or the generic one);
    constraints keep ``metrics`` inside their normal band. ``effect`` is the action's
    declared effect on metrics for a generic model (``simulation.engine.effects`` shape, e.g.
    from the action catalogue); ``EFFECTS[action]`` when None, ignored by the pump model.
    Runs inline, then stores the finished SimulationRun (succeeded, or failed with the error)
    and publishes it on the feed in one transaction: no half-written run is ever visible.
    """
    run = SimulationRun(
        asset=asset, anomaly=anomaly, engine_requested="monte_carlo", engine="monte_carlo",
        engine_reason=WHAT_IF_REASON.format(kind="asset"),
        seed=seed if seed is not None else secrets.randbits(63),
        started_at=timezone.now(),
        request={"action": action, "parameters": parameters, "metrics": metrics,
                 "at": at.isoformat(), "n_samples": n_samples or settings.SIMULATION_SAMPLES},
    )
    started = time.perf_counter()
    try:
        _what_if_result(run, asset, action, parameters, metrics, at, effect)
    except SimulationError as exc:
        run.status, run.error = SimulationStatus.FAILED, str(exc)
    run.progress, run.finished_at = 1.0, timezone.now()
    run.result = (run.result or {}) | {"wall_s": round(time.perf_counter() - started, 4)}
    with transaction.atomic():
        run.save()
        audit_run(run, actor=ACTOR, action="simulation.run", operation="created")
    return run


ModelFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ActionModel:
    """One action's what-if on one asset as a generator of outcomes (e.g. for a plant
    simulator that must behave as the twin predicted).

    ``kind``: ``"pump"`` or ``"generic"``; ``moved``: the metrics the action has a modelled
    effect on (``PumpModel.moved_metrics`` / ``GenericModel.moved_metrics``); ``floors``:
    outputs the model clips at 0; ``fn``/``hold_fn``: the Monte Carlo model of the action and
    of ``hold`` on the same ``inputs`` (metric units), ``state`` the calibrated state both
    start from, ``simulation_id`` the run it was rebuilt from (None: calibrated afresh).
    """

    kind: str
    action: str
    parameters: dict
    moved: tuple[str, ...]
    floors: frozenset[str]
    fn: ModelFn
    hold_fn: ModelFn
    inputs: dict[str, Any]
    state: dict
    simulation_id: int | None = None

    def draw(self, n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray],
                                                               dict[str, np.ndarray]]:
        """``n`` joint draws of the inputs pushed through the action's model and through
        ``hold``'s (common random numbers): ``(action outputs, hold outputs)``, each metric ->
        float64 array of shape (n,). The action's outputs have the distribution the what-if
        run summarised (its p5-p95 band is the verification band)."""
        samples = sample_inputs(self.inputs, n, rng)
        return self.fn(samples), self.hold_fn(samples)


def _action_model(model: WhatIfModel, action: str, parameters: Mapping[str, Any] | None,
                  state: dict, effect: Mapping[str, Any] | None,
                  simulation_id: int | None) -> ActionModel:
    parameters = dict(parameters or {})
    if model.kind == GENERIC:
        generic = GenericModel.from_state(model.state)
        fn, inputs = generic.what_if(action, parameters, state, effect)
        hold_fn, _ = generic.what_if("hold", {}, state)
        moved, floors = generic.moved_metrics(action, parameters, effect), generic.non_negative()
    else:
        pump = PumpModel.from_state(model.state)
        fn, inputs = pump.what_if(action, parameters, state)
        hold_fn, _ = pump.what_if("hold", {}, state)
        moved, floors = pump.moved_metrics(action, parameters), pump.non_negative()
    return ActionModel(model.kind, action, parameters, moved, floors, fn, hold_fn, inputs,
                       state, simulation_id)


def run_action_model(run: SimulationRun) -> ActionModel:
    """The what-if a finished ``run_what_if`` run computed, rebuilt: the asset's stored model,
    the run's action, parameters, calibrated state and declared effect.

    Raises SimulationError: the run did not succeed, is not a what-if run, or the asset's
    model is missing or of another kind than the run used (re-fitted meanwhile).
    """
    request = run.request or {}
    if run.status != SimulationStatus.SUCCEEDED or "state" not in request:
        raise SimulationError(f"simulation {run.pk} is not a finished what-if run")
    model = WhatIfModel.objects.filter(asset_id=run.asset_id).first()
    if model is None or model.kind != request.get("model"):
        raise SimulationError(f"the asset's what-if model is no longer the {request.get('model')}"
                              f" model simulation {run.pk} used")
    return _action_model(model, request["action"], request.get("parameters"), request["state"],
                         request.get("effect"), run.pk)


def action_model(asset: Asset, action: str, parameters: Mapping[str, Any] | None, *, at,
                 effect: Mapping[str, Any] | None = None) -> ActionModel:
    """``action``'s what-if on ``asset`` calibrated on telemetry up to ``at``, as
    ``run_what_if`` would compute it, without running or storing anything.

    Raises NotEnoughTelemetry, or SimulationError for an action the model does not know.
    """
    model = asset_model(asset)
    return _action_model(model, action, parameters, recent_state(asset, at=at, kind=model.kind),
                         effect, None)


def breach_probability(run: SimulationRun) -> float:
    """Largest P(breach) over the run's constraints (1.0 for a failed run: fail closed)."""
    if run.status != SimulationStatus.SUCCEEDED:
        return 1.0
    probabilities = [c["p_breach"] for c in run.result.get("constraints", [])]
    return float(np.max(probabilities)) if probabilities else 0.0
