from django.urls import path

from simulation import views
from simulation.api import views as api

urlpatterns = [
    path("run", api.SimulationRunCreateView.as_view(), name="simulation-run-create"),
    path("runs/<int:pk>", api.SimulationRunView.as_view(), name="simulation-run"),
    path("runs/<int:pk>/cancel", api.SimulationRunCancelView.as_view(),
         name="simulation-run-cancel"),
    path("runs/<int:pk>/view", views.run_page, name="simulation-run-page"),
    path("runs/<int:pk>/view/cancel", views.cancel_from_page, name="simulation-run-page-cancel"),
]
