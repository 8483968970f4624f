from django.urls import path

from aiw.api import views

urlpatterns = [
    path(".well-known/aiw-manifest.json", views.manifest, name="aiw-manifest"),
    path("schemas", views.schema_index, name="aiw-schemas"),
    path("schemas/<str:name>", views.schema_detail, name="aiw-schema"),
    path("diff", views.DiffView.as_view(), name="aiw-diff"),
    path("snapshot", views.SnapshotView.as_view(), name="aiw-snapshot"),
]
