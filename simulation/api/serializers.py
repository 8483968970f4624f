from rest_framework import serializers

from simulation.models import SimulationRun


class SimulationRunSerializer(serializers.ModelSerializer):
    """simulation.v1: a run's request, engine, seed, outputs and timing."""

    asset = serializers.SerializerMethodField()

    class Meta:
        model = SimulationRun
        fields = [
            "id", "asset", "anomaly", "status", "request", "result", "engine", "seed",
            "n_samples", "progress", "error", "created_at", "started_at", "finished_at",
        ]

    def get_asset(self, run: SimulationRun) -> str | None:
        return str(run.asset) if run.asset_id else None
