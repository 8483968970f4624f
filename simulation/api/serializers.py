"""simulation.v1 (a stored run) and the documented shape of a simulation request."""

from rest_framework import serializers

from simulation.engine import ENGINES, METHODS
from simulation.models import SimulationRun


class SimulationRunSerializer(serializers.ModelSerializer):
    """simulation.v1: a run's request, engine (requested, used, why), seed, progress, outputs
    and timing (``duration_s``: start to finish, seconds)."""

    asset = serializers.SerializerMethodField()
    duration_s = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = SimulationRun
        fields = [
            "id", "asset", "anomaly", "status", "request", "result", "engine_requested",
            "engine", "engine_reason", "seed", "n_samples", "progress", "samples_done",
            "samples_target", "cancel_requested_at", "error", "created_at", "started_at",
            "finished_at", "duration_s",
        ]

    def get_asset(self, run: SimulationRun) -> str | None:
        return str(run.asset) if run.asset_id else None


class SimulationRequestSerializer(serializers.Serializer):
    """POST /sim/run body: the engine's request (``simulation.engine.request``) plus ``asset``.

    Used for the OpenAPI documentation; the engine validates the body itself and names the
    offending part in a 400 problem. Give exactly one of ``inputs`` or ``pump``.
    """

    asset = serializers.RegexField(r"^[^/]+/[^/]+$", required=False, allow_null=True, help_text=(
        "'twin-slug/asset-slug': the run belongs to this asset (scope, feed). For a 'pump' "
        "request, a missing pump.model is the asset's fitted what-if model and a missing "
        "pump.state its state calibrated on its newest readings."))
    inputs = serializers.DictField(required=False, help_text=(
        'name -> {"dist": "normal"|"uniform"|"triangular"|"lognormal"|"empirical" or any '
        'scipy.stats continuous distribution, "params": {...}}'))
    outputs = serializers.DictField(required=False, allow_null=True, help_text=(
        'name -> {"terms": {input: coefficient}, "intercept": number}; default: the inputs'))
    correlation = serializers.DictField(required=False, allow_null=True, help_text=(
        '{"names": [...], "matrix": [[...]]}: Gaussian copula over some inputs'))
    pump = serializers.DictField(required=False, help_text=(
        '{"action": "hold"|"reduce_load"|"emergency_stop"|"open_valve", "params": '
        '{"fraction": f}, "model": <PumpModel state>, "state": <calibrated state>}'))
    constraints = serializers.ListField(child=serializers.DictField(), required=False,
                                        allow_null=True,
                                        help_text='[{"metric", "op": ">"|"<", "limit"}]')
    engine = serializers.ChoiceField(choices=ENGINES, required=False, default="auto")
    n_samples = serializers.IntegerField(required=False, min_value=2)
    max_samples = serializers.IntegerField(required=False, min_value=2)
    rse_target = serializers.FloatField(required=False)
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1,
                                    allow_null=True,
                                    help_text="drawn (and stored) when absent or null")
    method = serializers.ChoiceField(choices=METHODS, required=False)
    bins = serializers.IntegerField(required=False, min_value=1)
    epsilon = serializers.FloatField(required=False)
    alpha = serializers.FloatField(required=False)
    num_qubits = serializers.IntegerField(required=False, min_value=1)
    shots = serializers.IntegerField(required=False, min_value=1)
    p_hint = serializers.FloatField(required=False, allow_null=True, min_value=0.0,
                                    max_value=1.0)
    cost_basis = serializers.ChoiceField(choices=["simulator", "hardware"], required=False)
