"""Simulation API: run (inline or as a job), read a run with its progress, cancel a run.

Scope: a run whose asset is on a twin outside the caller's scope is 404 (``visible_runs``);
running or cancelling on a visible twin the caller may not operate is 403 (from the
services). Errors are problem+json (``twins.problems``): a SimulationError is 400.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.generics import RetrieveAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from simulation import services
from simulation.api.serializers import SimulationRequestSerializer, SimulationRunSerializer
from simulation.engine import SimulationError
from simulation.models import SimulationRun, SimulationStatus
from simulation.scoping import visible_runs
from twins.models import Asset
from twins.problems import PROBLEM_CONTENT_TYPE, PROBLEMS_EXTENSION, problem_body
from twins.scoping import get_scoped_or_404

NORMAL = {"dist": "normal", "params": {"mean": 10.0, "std": 1.0}}
EXAMPLES = [
    OpenApiExample("Monte Carlo, answered inline (200)", request_only=True, value={
        "inputs": {"flow": NORMAL, "head": {"dist": "uniform", "params": {"low": 1, "high": 2}}},
        "outputs": {"power": {"terms": {"flow": 0.5, "head": 2.0}, "intercept": 0.1}},
        "constraints": [{"metric": "power", "op": ">", "limit": 8.5}], "n_samples": 10000}),
    OpenApiExample("Tail probability on the quantum engine (202)", request_only=True, value={
        "inputs": {"x": NORMAL}, "constraints": [{"metric": "x", "op": ">", "limit": 11.0}],
        "engine": "quantum_iae", "num_qubits": 4, "epsilon": 0.02}),
    OpenApiExample("Pump what-if on an asset's fitted model", request_only=True, value={
        "asset": "skab/valve1-1", "pump": {"action": "reduce_load", "params": {"fraction": 0.2}},
        "n_samples": 200000}),
]
RUN_DESCRIPTION = (
    "Validates the request (any error: 400 problem naming the part), routes it (`engine_used`, "
    "`engine_reason` in the result) and stores a SimulationRun. Small Monte Carlo runs "
    "(n_samples <= SIMULATION_SYNC_MAX_SAMPLES, max_samples <= SIMULATION_SYNC_MAX_TOTAL) run "
    "inline: 200 with the finished run. Larger and quantum runs are Celery jobs: 202 with the "
    "queued run and `Location: /sim/runs/{id}`; poll it for `progress`, `samples_done`. Needs "
    "`simulation.add_simulationrun`, and operate rights on the asset's twin when `asset` is "
    "given (an asset outside the caller's scope: 404).")


class InvalidSimulation(APIException):
    """A SimulationError: 400 problem whose ``detail`` is the engine's message."""

    status_code, default_detail, default_code = 400, "Invalid simulation request", "invalid"


def resolve_asset(value, user) -> Asset | None:
    """``"twin-slug/asset-slug"`` -> the Asset in ``user``'s scope (404 outside it)."""
    if value is None:
        return None
    twin, sep, asset = str(value).partition("/")
    if not (twin and sep and asset) or "/" in asset:
        raise ValidationError({"asset": "expected 'twin-slug/asset-slug'"})
    return get_scoped_or_404(Asset.objects.select_related("twin"), user,
                             twin__slug=twin, slug=asset)


def _failed_inline(run: SimulationRun) -> Response:
    body = problem_body(400, "Simulation failed", run.error, run=run.pk)
    return Response(body, status=400, content_type=PROBLEM_CONTENT_TYPE)


class SimulationRunCreateView(APIView):
    """POST /sim/run: run a simulation (inline when small, else as a job)."""

    @extend_schema(
        summary="Run a simulation", description=RUN_DESCRIPTION,
        request=SimulationRequestSerializer, examples=EXAMPLES,
        extensions={PROBLEMS_EXTENSION: [404]},  # an asset outside the caller's scope
        responses={200: SimulationRunSerializer,
                   202: OpenApiResponse(SimulationRunSerializer,
                                        description="Queued; Location: /sim/runs/{id}")})
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError("the body must be a JSON object")
        body = dict(request.data)
        asset = resolve_asset(body.pop("asset", None), request.user)
        try:
            submission = services.submit_run(body, actor=request.user, asset=asset,
                                             request=request)
        except SimulationError as exc:
            raise InvalidSimulation(str(exc)) from exc
        run = submission.run
        if submission.inline and run.status == SimulationStatus.FAILED:
            return _failed_inline(run)
        location = reverse("simulation-run", args=[run.pk])
        data = SimulationRunSerializer(run).data
        if submission.inline:
            return Response(data, headers={"Content-Location": location})
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class SimulationRunView(RetrieveAPIView):
    """GET /sim/runs/{id}: one run with its status and progress (404 outside the caller's
    scope)."""

    serializer_class = SimulationRunSerializer

    @extend_schema(summary="Read a simulation run and its progress",
                   responses=SimulationRunSerializer)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return visible_runs(self.request.user)


class SimulationRunCancelView(APIView):
    """POST /sim/runs/{id}/cancel: cancel a queued or running run."""

    @extend_schema(
        summary="Cancel a simulation run", request=None,
        description=("A queued run ends `cancelled` at once (200). A running run is flagged "
                     "(`cancel_requested_at`) and ends `cancelled` at the engine's next check "
                     "(202). A finished run: 409."),
        extensions={PROBLEMS_EXTENSION: [409]},
        responses={200: SimulationRunSerializer, 202: SimulationRunSerializer})
    def post(self, request, pk: int):
        run = get_object_or_404(visible_runs(request.user), pk=pk)
        run = services.cancel_run(run.pk, actor=request.user, request=request)
        code = status.HTTP_200_OK if run.is_finished else status.HTTP_202_ACCEPTED
        return Response(SimulationRunSerializer(run).data, status=code)

