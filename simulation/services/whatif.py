"""What-if models of assets: fit them, calibrate the current state, run an action's what-if.

``run_what_if`` is what ``policy.services`` calls for every proposal (signature and behaviour
are a contract with the policy app). Fitting writes the asset's ``WhatIfModel`` through
``record_change`` (resource ``whatif_model``).
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policy.audit import record_change
from simulation.engine import PumpModel, SimulationError, calibrate_state, run_monte_carlo
from simulation.errors import RunNotPermitted
from simulation.models import SimulationRun, SimulationStatus, WhatIfModel
from simulation.services.common import ACTOR, audit_run, is_user
from telemetry.series import load_series
from twins.models import Asset

BAND_SIGMAS = 3.0
MIN_FIT_ROWS = 10  # PumpModel.fit's own minimum
REFIT_PERMISSION = "simulation.change_whatifmodel"
WHAT_IF_REASON = "pump what-if of a candidate action: Monte Carlo (the policy path)"


class NotEnoughTelemetry(SimulationError):
    """The asset has too little telemetry to fit or calibrate a model."""


def model_json(model: WhatIfModel) -> dict:
    """whatif_model JSON for the audit entry and the change feed (the state is left out)."""
    return {"id": model.pk, "asset": str(model.asset), "kind": model.kind,
            "n_rows": model.n_rows, "normal_from": model.normal_from,
            "normal_to": model.normal_to, "fit_report": model.fit_report, "bands": model.bands}


def _bands(X: np.ndarray, metrics: list[str]) -> dict[str, list[float]]:
    mean, std = X.mean(axis=0), X.std(axis=0)
    return {m: [float(mean[j] - BAND_SIGMAS * std[j]), float(mean[j] + BAND_SIGMAS * std[j])]
            for j, m in enumerate(metrics)}


def _store_model(asset: Asset, X: np.ndarray, metrics: list[str], *, actor, reason: str = "",
                 period: tuple[datetime, datetime] | None = None) -> WhatIfModel:
    """Fit the pump model on ``X`` ((n, len(metrics)) float64, metric units) and save it."""
    model = PumpModel.fit({m: X[:, j] for j, m in enumerate(metrics)})
    start, end = period or (None, None)
    with transaction.atomic():
        before = WhatIfModel.objects.select_for_update().filter(asset=asset).first()
        obj, created = WhatIfModel.objects.update_or_create(asset=asset, defaults={
            "state": model.to_state(), "fit_report": model.fit_report(),
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


def recent_state(asset: Asset, *, at, window: int | None = None) -> dict:
    """Current state calibrated on the ``window`` rows up to ``at``: per-metric mean/std/n/last."""
    window = window or settings.SIMULATION_CALIBRATION_WINDOW
    series = load_series(asset, after=at, history=window)
    X = series.X[: series.n_history]
    if len(X) < 10:
        raise NotEnoughTelemetry(f"{asset} has only {len(X)} rows before {at}")
    return calibrate_state({m: X[:, j] for j, m in enumerate(series.metrics)})


def constraints_for(model: WhatIfModel, metrics: list[str]) -> list[dict]:
    """Keep-in-band constraints (both sides of the calibration band) for ``metrics``."""
    constraints = []
    for metric in metrics:
        low, high = model.bands[metric]
        constraints += [{"metric": metric, "op": ">", "limit": high},
                        {"metric": metric, "op": "<", "limit": low}]
    return constraints


def _what_if_result(run: SimulationRun, asset: Asset, action: str, parameters: dict,
                    metrics: list[str], at) -> None:
    model = getattr(asset, "whatif_model", None) or fit_whatif_model(asset)
    state = recent_state(asset, at=at)
    fn, inputs = PumpModel.from_state(model.state).what_if(action, parameters, state)
    constraints = constraints_for(model, metrics)
    result = run_monte_carlo(fn, inputs, constraints=constraints, seed=run.seed,
                             n_samples=run.request["n_samples"]).to_dict()
    run.request |= {"state": state, "constraints": constraints}
    run.result, run.status = result, SimulationStatus.SUCCEEDED
    run.n_samples = run.samples_done = run.samples_target = result["n_samples"]


def run_what_if(
    *, asset: Asset, action: str, parameters: dict, metrics: list[str], at, anomaly=None,
    seed: int | None = None, n_samples: int | None = None,
) -> SimulationRun:
    """Monte Carlo what-if of ``action`` on ``asset``, calibrated on telemetry up to ``at``.

    Inputs are the asset's current state (recent window, ``SIMULATION_CALIBRATION_WINDOW`` rows)
    pushed through its fitted model; constraints keep ``metrics`` inside their normal band.
    Runs inline, then stores the finished SimulationRun (succeeded, or failed with the error)
    and publishes it on the feed in one transaction: no half-written run is ever visible.
    """
    run = SimulationRun(
        asset=asset, anomaly=anomaly, engine_requested="monte_carlo", engine="monte_carlo",
        engine_reason=WHAT_IF_REASON, seed=seed if seed is not None else secrets.randbits(63),
        started_at=timezone.now(),
        request={"action": action, "parameters": parameters, "metrics": metrics,
                 "at": at.isoformat(), "n_samples": n_samples or settings.SIMULATION_SAMPLES},
    )
    started = time.perf_counter()
    try:
        _what_if_result(run, asset, action, parameters, metrics, at)
    except SimulationError as exc:
        run.status, run.error = SimulationStatus.FAILED, str(exc)
    run.progress, run.finished_at = 1.0, timezone.now()
    run.result = (run.result or {}) | {"wall_s": round(time.perf_counter() - started, 4)}
    with transaction.atomic():
        run.save()
        audit_run(run, actor=ACTOR, action="simulation.run", operation="created")
    return run


def breach_probability(run: SimulationRun) -> float:
    """Largest P(breach) over the run's constraints (1.0 for a failed run: fail closed)."""
    if run.status != SimulationStatus.SUCCEEDED:
        return 1.0
    probabilities = [c["p_breach"] for c in run.result.get("constraints", [])]
    return float(np.max(probabilities)) if probabilities else 0.0
