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


@shared_task(ignore_result=True)
def requeue_stalled_runs() -> list[int]:
    """Celery beat: enqueue ``execute_simulation`` again for every run left ``running`` past
    its lease (``services.stalled_runs``: its worker died), whichever way the first delivery
    was lost (a killed prefork child acks its message; a killed worker's message waits for
    the broker's visibility timeout). The claim lets exactly one delivery restart it.
    Returns the run ids enqueued."""
    run_ids = list(services.stalled_runs().values_list("pk", flat=True))
    for run_id in run_ids:
        execute_simulation.delay(run_id)
    return run_ids
