from django.urls import path

from simulation import views

urlpatterns = [path("runs/<int:pk>", views.SimulationRunView.as_view(), name="simulation-run")]
