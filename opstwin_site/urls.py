"""Top-level URL map: each app owns its own routes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from opstwin_site.health import health_view, ready_view
from opstwin_site.metrics import metrics_view
from telemetry.api.query_views import AssetStateView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    # The split view serves its script as a file: no inline script for the CSP to allow.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="openapi-schema"),
         name="api-docs"),
    # Probes and metrics (opstwin_site/health.py, metrics.py): no login, no trailing slash.
    path("health", health_view, name="health"),
    path("ready", ready_view, name="ready"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("aiw.urls")),
    path("", include("twins.urls")),
    # The state of an asset reads stored telemetry, so telemetry serves it at the asset's URL.
    path("assets/<int:pk>/state", AssetStateView.as_view(), name="asset-state"),
    path("telemetry/", include("telemetry.urls")),
    path("sim/", include("simulation.urls")),
    path("", include("policy.urls")),
]
