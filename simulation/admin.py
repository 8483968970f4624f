"""Read-only admin of runs and what-if models; changes go through actions that call the
services (cancel runs, re-fit a model on a declared normal period)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from simulation import services
from simulation.engine import SimulationError
from simulation.forms import NormalPeriodForm
from simulation.models import SimulationRun, WhatIfModel
from twins.admin import ReadOnlyAdmin
from twins.errors import ServiceError


@admin.register(SimulationRun)
class SimulationRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "asset", "status", "engine_requested", "engine", "progress",
                    "created_at", "finished_at"]
    list_filter = ["status", "engine"]
    actions = ["cancel_runs"]

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("simulation.add_simulationrun")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset) -> None:
        for run in queryset:
            try:
                services.cancel_run(run.pk, actor=request.user, request=request)
                self.message_user(request, f"{run}: cancellation requested", messages.SUCCESS)
            except ServiceError as exc:
                self.message_user(request, f"{run}: {exc}", messages.ERROR)


@admin.register(WhatIfModel)
class WhatIfModelAdmin(ReadOnlyAdmin):
    list_display = ["asset", "kind", "n_rows", "normal_from", "normal_to", "fitted_at"]
    exclude = ["state"]
    actions = ["refit_on_normal_period"]

    def has_refit_permission(self, request) -> bool:
        return request.user.has_perm("simulation.change_whatifmodel")

    def _refit(self, request, model: WhatIfModel, data: dict) -> None:
        try:
            fitted = services.refit_whatif_model(model.asset, start=data["start"], end=data["end"],
                                                 actor=request.user, reason=data["reason"])
            self.message_user(request, f"{model.asset}: re-fitted on {fitted.n_rows} readings",
                              messages.SUCCESS)
        except (SimulationError, ServiceError) as exc:
            self.message_user(request, f"{model.asset}: {exc}", messages.ERROR)

    @admin.action(description="Re-fit on a declared normal period", permissions=["refit"])
    def refit_on_normal_period(self, request, queryset):
        """Ask for the period (intermediate page), then re-fit every selected asset's model."""
        form = NormalPeriodForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for model in queryset.select_related("asset__twin"):
                self._refit(request, model, form.cleaned_data)
            return None
        return TemplateResponse(request, "simulation/admin_refit.html", {
            **self.admin_site.each_context(request), "title": "Re-fit on a normal period",
            "opts": self.model._meta, "form": form, "models": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })
