from django.urls import path
from rest_framework.routers import SimpleRouter

from policy import views
from policy.api.views import EvaluateView, ProposalViewSet

router = SimpleRouter(trailing_slash=False)
router.register("proposals", ProposalViewSet, basename="proposal")

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/proposals/<int:pk>/", views.proposal_detail, name="dashboard-proposal"),
    path("dashboard/proposals/<int:pk>/<str:verb>", views.act, name="dashboard-act"),
    path("policy/evaluate", EvaluateView.as_view(), name="policy-evaluate"),
    *router.urls,
]
