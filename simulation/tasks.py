"""Celery tasks of the simulation app (queue ``simulate``): take ids, call the services."""

from celery import shared_task
from django.conf import settings

from simulation import services


# The soft limit raises inside the engine, which records the run as failed with the reason;
# the hard limit (30 s later) kills a worker stuck in one uninterruptible numpy/scipy call.
@shared_task(acks_late=True, ignore_result=True,
             soft_time_limit=settings.SIMULATION_MAX_SECONDS,
             time_limit=settings.SIMULATION_MAX_SECONDS + 30)
def execute_simulation(run_id: int) -> str:
    """Run a queued SimulationRun to the end; returns its final status.

    A redelivered or cancelled run is left as it is (``execute_run`` claims it atomically);
    a run deleted meanwhile (its asset was) returns ``"missing"``.
    """
    run = services.execute_run(run_id)
    return run.status if run is not None else "missing"
