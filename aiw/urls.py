from django.urls import path

from aiw import sse
from aiw.api import views
from aiw.api.manifest import ManifestView

urlpatterns = [
    path(".well-known/aiw-manifest.json", ManifestView.as_view(), name="aiw-manifest"),
    path("schemas", views.SchemaIndexView.as_view(), name="aiw-schemas"),
    path("schemas/<str:name>", views.SchemaDetailView.as_view(), name="aiw-schema"),
    path("actions", views.CatalogueView.as_view(), name="aiw-actions"),
    path("diff", views.DiffView.as_view(), name="aiw-diff"),
    path("snapshot", views.SnapshotView.as_view(), name="aiw-snapshot"),
    path("subscribe", sse.subscribe, name="aiw-subscribe"),
]
