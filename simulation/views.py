"""Dashboard pages of simulation runs (server-rendered; the page polls the JSON endpoint)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from policy.errors import PolicyError
from simulation import services
from simulation.charts import histogram_svg
from simulation.models import SimulationRun
from simulation.scoping import visible_runs

COST_ROWS = ("monte_carlo", "quantum_iae")


def _charts(run: SimulationRun) -> list[dict]:
    metrics = (run.result or {}).get("metrics") or {}
    return [{"metric": m, "stats": s, "svg": histogram_svg(run.result, m)}
            for m, s in metrics.items()]


def _timing(run: SimulationRun) -> dict:
    queued = (run.started_at - run.created_at).total_seconds() if run.started_at else None
    return {"queued_s": queued, "run_s": run.duration_s,
            "engine_s": (run.result or {}).get("elapsed_s")}


@login_required
def run_page(request, pk: int):
    """One run: status and live progress, engine requested/used and why, the distribution of
    each metric with its percentiles and constraint lines, P(breach), timing."""
    run = get_object_or_404(visible_runs(request.user), pk=pk)
    result = run.result or {}
    return render(request, "simulation/run_detail.html", {
        "run": run, "result": result, "charts": _charts(run), "timing": _timing(run),
        "cost": result.get("cost") or {}, "quantum": result.get("engine") == "quantum_iae",
        "can_cancel": not run.is_finished and request.user.has_perm(
            "simulation.add_simulationrun"),
    })


@login_required
@require_POST
def cancel_from_page(request, pk: int):
    """The run page's Cancel button: ``services.cancel_run``, then back to the page."""
    run = get_object_or_404(visible_runs(request.user), pk=pk)
    try:
        services.cancel_run(run.pk, actor=request.user, request=request)
        messages.success(request, f"Cancellation of simulation {run.pk} requested.")
    except PolicyError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    return redirect("simulation-run-page", pk=run.pk)
