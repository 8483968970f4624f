from django.urls import path

from twins import views

urlpatterns = [
    path("", views.twin_list, name="twin-list"),
    path("<slug:twin>/<slug:asset>/", views.asset_detail, name="asset-detail"),
]
