from django.contrib import admin

from simulation.models import SimulationRun, WhatIfModel


@admin.register(SimulationRun)
class SimulationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "asset", "status", "engine", "n_samples", "created_at"]
    list_filter = ["status", "engine"]


@admin.register(WhatIfModel)
class WhatIfModelAdmin(admin.ModelAdmin):
    list_display = ["asset", "kind", "n_rows", "fitted_at"]
