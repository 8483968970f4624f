"""Simulation API: read a stored run."""

from drf_spectacular.utils import extend_schema
from rest_framework.generics import RetrieveAPIView

from simulation.api.serializers import SimulationRunSerializer
from simulation.models import SimulationRun
from twins.scoping import visible_twins


class SimulationRunView(RetrieveAPIView):
    """GET /sim/runs/{id}: one run (404 when its twin is outside the caller's scope)."""

    serializer_class = SimulationRunSerializer

    @extend_schema(responses=SimulationRunSerializer)
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return SimulationRun.objects.filter(asset__twin__in=visible_twins(self.request.user))
