from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from twins.models import Asset, Twin


class AssetInline(admin.TabularInline):
    model = Asset
    extra = 0
    fields = ["slug", "name", "kind"]


@admin.register(Twin)
class TwinAdmin(GuardedModelAdmin):
    """Twins with the 'Object permissions' page for per-twin grants to users and groups."""

    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [AssetInline]


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "kind"]
    list_filter = ["kind", "twin"]
    search_fields = ["slug", "name"]
