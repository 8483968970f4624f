from django.urls import path
from rest_framework.routers import SimpleRouter

from policy import views
from policy.api.views import ProposalViewSet

router = SimpleRouter(trailing_slash=False)
router.register("proposals", ProposalViewSet, basename="proposal")

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/proposals/<int:pk>/", views.proposal_detail, name="dashboard-proposal"),
    path("dashboard/proposals/<int:pk>/approve", views.approve, name="dashboard-approve"),
    path("dashboard/proposals/<int:pk>/reject", views.reject, name="dashboard-reject"),
    *router.urls,
]
