"""The only code that creates simulation runs and fits what-if models."""

from __future__ import annotations

import secrets
import time

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from policy.audit import record_change
from simulation.engine import PumpModel, SimulationError, calibrate_state, run_monte_carlo
from simulation.models import SimulationRun, SimulationStatus, WhatIfModel
from telemetry.series import load_series
from twins.models import Asset

ACTOR = "simulator"
BAND_SIGMAS = 3.0


class NotEnoughTelemetry(SimulationError):
    """The asset has too little telemetry to fit or calibrate a model."""


def _serialize(run: SimulationRun) -> dict:
    from simulation.api.serializers import SimulationRunSerializer

    return dict(SimulationRunSerializer(run).data)


def fit_whatif_model(asset: Asset, *, rows: int | None = None) -> WhatIfModel:
    """Fit (or re-fit) the asset's what-if model on its first ``rows`` telemetry rows.

    ``rows`` defaults to ``SIMULATION_FIT_ROWS`` (400: SKAB's convention of a normal-operation
    calibration window at the start of each run). Raises ``NotEnoughTelemetry`` when fewer than
    ``rows // 2`` rows exist.
    """
    rows = rows or settings.SIMULATION_FIT_ROWS
    series = load_series(asset, after=None, history=0)
    if len(series.ts) < max(rows // 2, 10):
        raise NotEnoughTelemetry(f"{asset} has {len(series.ts)} rows; {rows // 2} needed to fit")
    X = series.X[:rows]
    data = {m: X[:, j] for j, m in enumerate(series.metrics)}
    model = PumpModel.fit(data)
    bands = {
        m: [float(X[:, j].mean() - BAND_SIGMAS * X[:, j].std()),
            float(X[:, j].mean() + BAND_SIGMAS * X[:, j].std())]
        for j, m in enumerate(series.metrics)
    }
    obj, _ = WhatIfModel.objects.update_or_create(
        asset=asset,
        defaults={"state": model.to_state(), "fit_report": model.fit_report(), "bands": bands,
                  "n_rows": len(X)},
    )
    return obj


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


def run_what_if(
    *, asset: Asset, action: str, parameters: dict, metrics: list[str], at, anomaly=None,
    seed: int | None = None, n_samples: int | None = None,
) -> SimulationRun:
    """Monte Carlo what-if of ``action`` on ``asset``, calibrated on telemetry up to ``at``.

    Inputs are the asset's current state (recent window, ``SIMULATION_CALIBRATION_WINDOW`` rows)
    pushed through its fitted model; constraints keep ``metrics`` inside their normal band.
    Stores a SimulationRun (succeeded or failed, with the error) and publishes it on the feed.
    """
    seed = seed if seed is not None else secrets.randbits(63)
    run = SimulationRun.objects.create(
        asset=asset, anomaly=anomaly, status=SimulationStatus.RUNNING, engine="monte_carlo",
        seed=seed, started_at=timezone.now(),
        request={"action": action, "parameters": parameters, "metrics": metrics,
                 "at": at.isoformat(), "n_samples": n_samples or settings.SIMULATION_SAMPLES},
    )
    started = time.perf_counter()
    try:
        model = getattr(asset, "whatif_model", None) or fit_whatif_model(asset)
        state = recent_state(asset, at=at)
        fn, inputs = PumpModel.from_state(model.state).what_if(action, parameters, state)
        constraints = constraints_for(model, metrics)
        result = run_monte_carlo(fn, inputs, constraints=constraints, seed=seed,
                                 n_samples=n_samples or settings.SIMULATION_SAMPLES).to_dict()
        run.request |= {"state": state, "constraints": constraints}
        run.result, run.status = result, SimulationStatus.SUCCEEDED
        run.n_samples = result["n_samples"]
    except SimulationError as exc:
        run.status, run.error = SimulationStatus.FAILED, str(exc)
    run.progress, run.finished_at = 1.0, timezone.now()
    run.result = (run.result or {}) | {"wall_s": round(time.perf_counter() - started, 4)}
    with transaction.atomic():
        run.save()
        record_change(actor=ACTOR, action="simulation.run", resource_type="simulation",
                      resource_id=run.pk, operation="created", twin=asset.twin,
                      after=_serialize(run))
    return run


def breach_probability(run: SimulationRun) -> float:
    """Largest P(breach) over the run's constraints (1.0 for a failed run: fail closed)."""
    if run.status != SimulationStatus.SUCCEEDED:
        return 1.0
    probabilities = [c["p_breach"] for c in run.result.get("constraints", [])]
    return float(np.max(probabilities)) if probabilities else 0.0
