"""Simulation runs as jobs: submit, execute (inline or on a Celery worker), cancel, finish.

Lifecycle and what each step publishes (audit entry + change event, ``resource_type``
``simulation``):

* ``submit_run`` stores the run ``queued`` (``simulation.queue``, operation ``created``) and
  enqueues ``simulation.tasks.execute_simulation`` on commit; a small run is stored
  ``running`` instead (``simulation.start``) and executed in the caller's process.
* ``execute_run`` claims a queued run (``simulation.start``), runs the engine with the
  progress and cancel callbacks of :mod:`.progress`, then finishes it.
* ``cancel_run`` cancels a queued run at once, or flags a running one, which ends
  ``cancelled`` at the engine's next check (``simulation.cancel``).
* finishing stores the status, result or error and timing (``simulation.succeeded`` /
  ``simulation.failed`` / ``simulation.cancelled``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from simulation.engine import SimulationCancelled, SimulationError, choose_engine, simulate
from simulation.errors import RunConflict
from simulation.models import SimulationRun, SimulationStatus
from simulation.services.common import audit_run, is_user, require_run_permission
from simulation.services.prepare import prepare_request, runs_inline
from simulation.services.progress import CancelFlag, ProgressWriter
from twins.models import Asset

logger = logging.getLogger(__name__)
Status = SimulationStatus


@dataclass(frozen=True)
class Submission:
    """A submitted run and whether it ran inline (finished) or was queued for a worker."""

    run: SimulationRun
    inline: bool


def enqueue_run(run_id: int) -> None:
    """Hand a queued run to the ``simulate`` queue (called on commit)."""
    from simulation.tasks import execute_simulation

    execute_simulation.delay(run_id)


def _create(prepared: dict, choice, *, actor, asset: Asset | None, inline: bool,
            request=None) -> SimulationRun:
    run = SimulationRun(
        asset=asset, request=prepared, engine_requested=prepared.get("engine", "auto"),
        engine=choice.engine, engine_reason=choice.reason, seed=prepared["seed"],
        created_by=actor if is_user(actor) else None,
        status=Status.RUNNING if inline else Status.QUEUED,
        started_at=timezone.now() if inline else None,
    )
    with transaction.atomic():
        run.save()
        audit_run(run, actor=actor, action="simulation.start" if inline else "simulation.queue",
                  operation="created", request=request)
        if not inline:
            transaction.on_commit(partial(enqueue_run, run.pk))
    return run


def submit_run(body: dict, *, actor, asset: Asset | None = None, request=None) -> Submission:
    """Validate and store a run of ``body`` (engine request shape), then run or queue it.

    ``actor`` is the requesting user (``simulation.add_simulationrun``, and operate rights on
    ``asset``'s twin when given). Small Monte Carlo runs (:func:`.prepare.runs_inline`) execute
    here and return finished; the rest are queued for a worker. Raises RunNotPermitted (403)
    or SimulationError (400: invalid request, unknown engine, sizes, missing telemetry); an
    invalid request stores nothing.
    """
    require_run_permission(actor, asset)
    prepared = prepare_request(body, asset=asset)
    choice = choose_engine(prepared)
    inline = runs_inline(choice, prepared)
    run = _create(prepared, choice, actor=actor, asset=asset, inline=inline, request=request)
    return Submission(_run_and_finish(run) if inline else run, inline)


def run_lease_seconds() -> float:
    """How long a claim on a running run lasts (s): the task's hard time limit
    (``SIMULATION_MAX_SECONDS`` + 30, see ``simulation.tasks``) plus 30 s of slack. Past it no
    live worker can still be executing the run, so its worker died (SIGKILL, OOM, lost node)."""
    return settings.SIMULATION_MAX_SECONDS + 60.0


def stalled_runs():
    """Runs left ``running`` past their lease (their worker died): a queryset."""
    cutoff = timezone.now() - timedelta(seconds=run_lease_seconds())
    return SimulationRun.objects.filter(status=Status.RUNNING, started_at__lt=cutoff)


def _claim(run_id: int) -> SimulationRun | None:
    """queued -> running, exactly once; or a running run whose lease expired (its worker died
    mid-run, and the task was redelivered or requeued) -> running again, with a new lease.
    The conditional UPDATE closes the race between two deliveries of the same task, between
    a worker and ``cancel_run``, and between two workers reclaiming one stalled run."""
    with transaction.atomic():
        stalled = stalled_runs().filter(pk=run_id)
        claimed = SimulationRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=timezone.now())
        reclaimed = 0 if claimed else stalled.update(started_at=timezone.now(), progress=0.0,
                                                     samples_done=0)
        if claimed + reclaimed != 1:
            return None
        run = SimulationRun.objects.select_related("asset__twin").get(pk=run_id)
        audit_run(run, actor=None, action="simulation.restart" if reclaimed else
                  "simulation.start")
    return run


def execute_run(run_id: int) -> SimulationRun | None:
    """Run a queued run to the end (the Celery task's body). A run that is no longer queued
    (already claimed, cancelled, finished) is returned unchanged; a deleted one is None."""
    run = _claim(run_id)
    if run is None:
        return SimulationRun.objects.filter(pk=run_id).first()
    return _run_and_finish(run)


def _compute(run: SimulationRun) -> tuple[str, dict | None, str]:
    starter = run.created_by.get_username() if run.created_by_id else "simulator"
    progress = ProgressWriter(run.pk, settings.SIMULATION_PROGRESS_SECONDS,
                              twin=run.asset.twin if run.asset_id else None,
                              actor="simulator" if run.asset_id else starter)
    cancelled = CancelFlag(run.pk, settings.SIMULATION_CANCEL_POLL_SECONDS)
    try:
        return Status.SUCCEEDED, simulate(run.request, progress=progress, cancelled=cancelled), ""
    except SimulationCancelled as exc:
        return Status.CANCELLED, None, str(exc)
    except SoftTimeLimitExceeded:
        limit = settings.SIMULATION_MAX_SECONDS
        return Status.FAILED, None, f"stopped after SIMULATION_MAX_SECONDS = {limit:g} s"
    except SimulationError as exc:
        return Status.FAILED, None, str(exc)
    except Exception as exc:  # a run must never stay "running" because of a bug
        logger.exception("simulation %s crashed", run.pk)
        return Status.FAILED, None, f"internal error: {type(exc).__name__}: {exc}"


def _samples(result: dict) -> int:
    if "n_samples" in result:
        return int(result["n_samples"])
    return int(result.get("shots", 0)) * int(result.get("circuits", 0))  # quantum: shots run


def _run_and_finish(run: SimulationRun) -> SimulationRun:
    status, result, error = _compute(run)
    with transaction.atomic():
        run = SimulationRun.objects.select_for_update(of=("self",)).select_related("asset__twin") \
            .get(pk=run.pk)
        run.status, run.result, run.error, run.finished_at = status, result, error, timezone.now()
        if result is not None:
            run.samples_done = run.samples_target = _samples(result)
            run.n_samples = result.get("n_samples")
            run.progress = 1.0
        run.save()
        audit_run(run, actor=None, action=f"simulation.{status}", reason=error)
    return run


def cancel_run(run_id: int, *, actor, request=None) -> SimulationRun:
    """Cancel a run: a queued one ends ``cancelled`` now, a running one is flagged and ends
    ``cancelled`` at the engine's next check (within one chunk of samples or one IAE round).

    Idempotent while the flag is pending. The row lock serialises this with ``_claim`` and
    the finish. Raises RunNotPermitted (403) or RunConflict (409: the run already finished).
    """
    with transaction.atomic():
        run = SimulationRun.objects.select_for_update(of=("self",)).select_related("asset__twin") \
            .get(pk=run_id)
        require_run_permission(actor, run.asset)
        if run.is_finished:
            raise RunConflict(f"simulation {run_id} already {run.status}")
        if run.cancel_requested_at is not None:
            return run
        run.cancel_requested_at = timezone.now()
        if run.status == Status.QUEUED:
            run.status, run.finished_at = Status.CANCELLED, run.cancel_requested_at
            run.error = "cancelled before it started"
        run.save()
        audit_run(run, actor=actor, action="simulation.cancel", request=request)
    return run
