from django.urls import path
from rest_framework.routers import SimpleRouter

from policy import asset_views, notification_views, queue_views, views
from policy.api.views import EvaluateView, ProposalViewSet
from simulation.views import run_list
from telemetry.views import anomaly_list

router = SimpleRouter(trailing_slash=False)
router.register("proposals", ProposalViewSet, basename="proposal")

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    # The console's list pages (each app's dashboard view, mounted at the site's top level).
    path("anomalies/", anomaly_list, name="anomaly-list"),
    path("simulations/", run_list, name="simulation-list"),
    path("approvals/", queue_views.approval_queue, name="approval-queue"),
    path("audit/", views.audit_log, name="audit-log"),
    path("twins/", asset_views.twin_list, name="twin-list"),
    path("twins/<slug:twin>/<slug:asset>/", asset_views.asset_detail, name="asset-detail"),
    path("dashboard/proposals/<int:pk>/", views.proposal_detail, name="dashboard-proposal"),
    path("dashboard/proposals/<int:pk>/<str:verb>", views.act, name="dashboard-act"),
    path("settings/notifications/", notification_views.notification_settings,
         name="notification-settings"),
    path("policy/evaluate", EvaluateView.as_view(), name="policy-evaluate"),
    *router.urls,
]
