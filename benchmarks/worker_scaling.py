"""Celery worker scaling: queued simulation jobs drained by 1 and by 2 workers (prints figures).

JOBS Monte Carlo runs (INPUTS normal inputs, SAMPLES samples each, fixed seeds) are stored
``queued`` in a scratch database and their ``execute_simulation`` tasks published to the
``simulate`` queue on REDIS_URL once N workers (``celery worker -Q simulate --concurrency
1``, N = 1, then 2) answer a ping; the time from publishing to the last run finishing is
measured. Same-run baseline: the same runs executed one after the other in this
process (``services.execute_run``, no broker, no worker), i.e. one core's rate with no queueing
overhead. The ratio says what one and two workers achieve of one and two such cores.

Run: ``python benchmarks/worker_scaling.py [--jobs 16]`` with DATABASE_URL and REDIS_URL.
Bounded: about 2-4 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._apiload import server_env  # noqa: E402
from benchmarks._telemetry_bench import bench_database, setup_django  # noqa: E402
from benchmarks.faults import worker  # noqa: E402


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=400_000)
    return parser.parse_args()


def store_runs(args, count: int) -> list[int]:
    """``count`` queued runs (not yet published)."""
    from simulation.models import SimulationRun, SimulationStatus

    request = {
        "inputs": {
            f"x{i}": {"dist": "normal", "params": {"mean": 0, "std": 1}} for i in range(args.inputs)
        },
        "outputs": {"y": {"terms": {f"x{i}": 1.0 for i in range(args.inputs)}}},
        "constraints": [{"metric": "y", "op": ">", "limit": 3}],
        "n_samples": args.samples,
        "max_samples": args.samples,
    }
    runs = [
        SimulationRun.objects.create(
            status=SimulationStatus.QUEUED,
            request=request | {"seed": k},
            engine_requested="monte_carlo",
            engine="monte_carlo",
            seed=k,
        )
        for k in range(count)
    ]
    return [run.pk for run in runs]


def baseline(args) -> float:
    """Runs per second executed in this process, one after the other."""
    from simulation import services

    (warm_up,) = store_runs(args, 1)  # imports, first connections: not measured
    services.execute_run(warm_up)
    run_ids = store_runs(args, max(4, args.jobs // 2))
    start = time.perf_counter()
    for run_id in run_ids:
        assert services.execute_run(run_id).status == "succeeded"
    return len(run_ids) / (time.perf_counter() - start)


def drain(args, workers: int, env: dict, tmp: Path) -> float:
    """Runs per second drained by ``workers`` workers, from the moment all are ready."""
    from opstwin_site.celery import app
    from simulation.models import SimulationRun
    from simulation.tasks import execute_simulation

    run_ids = store_runs(args, args.jobs)
    procs = [worker(env, tmp, f"w{workers}-{k}", beat=False) for k in range(workers)]
    try:
        names = {f"w{workers}-{k}@faults" for k in range(workers)}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if names <= {name for reply in replies for name in reply}:
                break
        for run_id in run_ids:  # published once every worker is consuming
            execute_simulation.delay(run_id)
        start = time.perf_counter()
        while SimulationRun.objects.filter(pk__in=run_ids, finished_at=None).exists():
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    statuses = set(SimulationRun.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    assert statuses == {"succeeded"}, statuses
    return len(run_ids) / elapsed


def main() -> None:
    args = _args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("set REDIS_URL (the Celery broker the workers consume)")
    with bench_database("workers") as url, tempfile.TemporaryDirectory() as tmp_name:
        setup_django(url)
        logging.getLogger("celery").setLevel(logging.WARNING)
        from opstwin_site.celery import app

        app.conf.task_always_eager = False
        env = server_env(url, CELERY_TASK_ALWAYS_EAGER="0")
        ceiling = baseline(args)
        one = drain(args, 1, env, Path(tmp_name))
        two = drain(args, 2, env, Path(tmp_name))
    print(
        f"\nCelery worker scaling, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.jobs} "
        f"Monte Carlo runs of {args.samples:,} samples x {args.inputs} inputs per step"
    )
    print(f"baseline (same run, in-process, serial): {ceiling:.2f} runs/s")
    print(f"1 worker : {one:.2f} runs/s = {one / ceiling:.0%} of the baseline")
    print(
        f"2 workers: {two:.2f} runs/s = {two / ceiling:.0%} of the baseline, "
        f"{two / one:.2f}x one worker"
    )


if __name__ == "__main__":
    main()
