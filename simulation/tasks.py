"""Celery tasks of the simulation app (queue ``simulate``): take ids, call the services."""

from celery import shared_task

from simulation import services


@shared_task(acks_late=True, ignore_result=True)
def execute_simulation(run_id: int) -> str:
    """Run a queued SimulationRun to the end; returns its final status.

    A redelivered or cancelled run is left as it is (``execute_run`` claims it atomically);
    a run deleted meanwhile (its asset was) returns ``"missing"``.
    """
    run = services.execute_run(run_id)
    return run.status if run is not None else "missing"
