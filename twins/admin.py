"""Django admin of the bottom layer: twins and assets (saved through ``twins.services``, so
every admin edit is audited and on the feed), and the ledger (read-only)."""

from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from twins import services
from twins.models import Asset, AssetType, AuditAnchor, AuditEntry, ChangeEvent, Twin


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by services only: no add, change or delete here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AssetInline(admin.TabularInline):
    model = Asset
    extra = 0
    fields = ["slug", "name", "asset_type", "parent"]


@admin.register(Twin)
class TwinAdmin(GuardedModelAdmin):
    """Twins with the 'Object permissions' page for per-twin grants to users and groups
    (``twins.view_twin`` to see the twin, ``twins.operate_twin`` to act on it; see
    ``twins.roles``). Saves and deletes, the inline assets' included, go through
    ``twins.services``. The policy app adds each twin's signed-policy state
    (``policy.admin.TwinPolicyAdmin``)."""

    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [AssetInline]

    def save_model(self, request, obj: Twin, form, change: bool) -> None:
        services.save_twin(obj, actor=request.user, request=request)

    def delete_model(self, request, obj: Twin) -> None:
        services.delete_twin(obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for twin in queryset:
            services.delete_twin(twin, actor=request.user, request=request)

    def save_formset(self, request, form, formset, change: bool) -> None:
        """The asset inline: each new, changed or deleted asset through ``twins.services``."""
        for asset in formset.save(commit=False):
            services.save_asset(asset, actor=request.user, request=request)
        for asset in formset.deleted_objects:
            services.delete_asset(asset, actor=request.user, request=request)


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    """Assets; saves and deletes go through ``twins.services`` (audited, on the feed)."""

    list_display = ["__str__", "name", "asset_type", "parent", "revision"]
    list_filter = ["asset_type", "kind", "twin"]
    search_fields = ["slug", "name"]
    readonly_fields = ["kind", "desired", "revision"]

    def save_model(self, request, obj: Asset, form, change: bool) -> None:
        services.save_asset(obj, actor=request.user, request=request)

    def delete_model(self, request, obj: Asset) -> None:
        services.delete_asset(obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for asset in queryset.select_related("twin"):
            services.delete_asset(asset, actor=request.user, request=request)


@admin.register(AssetType)
class AssetTypeAdmin(admin.ModelAdmin):
    """Asset types (admins only, by the role's model permissions). The form validates the
    metric list and, through the apps that own them, the action, detector and what-if names
    (``AssetType.clean``); saves and deletes go through ``twins.services`` (revision bumped,
    audited, on the feed). A type still used by assets cannot be deleted."""

    list_display = ["slug", "name", "base_kind", "detector", "whatif_model", "revision"]
    list_filter = ["base_kind"]
    search_fields = ["slug", "name"]
    readonly_fields = ["revision", "created_at", "updated_at"]

    def save_model(self, request, obj: AssetType, form, change: bool) -> None:
        services.save_asset_type(obj, actor=request.user, request=request)

    def delete_model(self, request, obj: AssetType) -> None:
        services.delete_asset_type(obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for asset_type in queryset:
            services.delete_asset_type(asset_type, actor=request.user, request=request)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: the audit chain is append-only."""

    list_display = ["seq", "at", "actor", "role", "action", "resource_type", "resource_id"]
    list_filter = ["action", "resource_type"]


@admin.register(AuditAnchor)
class AuditAnchorAdmin(ReadOnlyAdmin):
    list_display = ["seq", "hash", "at"]


@admin.register(ChangeEvent)
class ChangeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "resource_type", "resource_id", "twin", "actor", "created_at"]
    list_filter = ["resource_type", "type"]
