"""Dashboard pages of simulation runs: the list and one run, both following the change feed
(``static/console.js``): a run's lifecycle events (queued, started, finished) refresh them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from simulation import services
from simulation.charts import histogram_svg
from simulation.models import SimulationRun, SimulationStatus
from simulation.scoping import visible_runs
from simulation.services.common import may_run
from twins.errors import ServiceError
from twins.feed import feed_cursor

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
    """One run: status and progress, engine requested/used and why, the distribution of
    each metric with its percentiles and constraint lines, P(breach), timing. The page
    follows the feed: the run's lifecycle events re-render it (``?fragment=run``)."""
    cursor = feed_cursor()
    run = get_object_or_404(visible_runs(request.user), pk=pk)
    result = run.result or {}
    context = {
        "run": run, "result": result, "charts": _charts(run), "timing": _timing(run),
        "cost": result.get("cost") or {}, "quantum": result.get("engine") == "quantum_iae",
        "can_cancel": not run.is_finished and may_run(request.user, run.asset),
        "feed_cursor": cursor,
    }
    if request.GET.get("fragment") == "run":
        response = render(request, "simulation/_partials/run.html", context)
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "simulation/run_detail.html", context)


def _filtered_runs(request):
    runs = visible_runs(request.user).select_related("created_by").defer("result")
    status = request.GET.get("status")
    if status in SimulationStatus.values:
        runs = runs.filter(status=status)
    if request.GET.get("twin"):
        runs = runs.filter(asset__twin__slug=request.GET["twin"])
    return runs.order_by("-created_at", "-pk")


@login_required
def run_list(request):
    """``/simulations/``: the runs the user may see, newest first, 50 per page; running ones
    show their progress, finished ones their outcome. Follows the feed (``?fragment=list``)."""
    cursor = feed_cursor()
    page = Paginator(_filtered_runs(request), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    for name in ("page", "fragment"):
        query.pop(name, None)
    context = {"page": page, "query": query.urlencode(), "feed_cursor": cursor,
               "statuses": SimulationStatus.choices, "selected": request.GET}
    if request.GET.get("fragment") == "list":
        response = render(request, "simulation/_partials/run_rows.html", context)
        response["X-Feed-Cursor"] = cursor
        return response
    return render(request, "simulation/run_list.html", context)


@login_required
@require_POST
def cancel_from_page(request, pk: int):
    """The run page's Cancel button: ``services.cancel_run``, then back to the page."""
    run = get_object_or_404(visible_runs(request.user), pk=pk)
    try:
        services.cancel_run(run.pk, actor=request.user, request=request)
        messages.success(request, f"Cancellation of simulation {run.pk} requested.")
    except ServiceError as exc:
        messages.error(request, f"{exc.title}: {exc}")
    return redirect("simulation-run-page", pk=run.pk)
