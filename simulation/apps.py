from django.apps import AppConfig


class SimulationConfig(AppConfig):
    name = "simulation"
    verbose_name = "Simulation"

    def ready(self) -> None:
        from simulation.services.whatif import asset_type_errors
        from twins.asset_types import register_validator

        register_validator(asset_type_errors)
