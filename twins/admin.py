from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from guardian.admin import GuardedModelAdmin

from twins.models import Asset, Twin


class AssetInline(admin.TabularInline):
    model = Asset
    extra = 0
    fields = ["slug", "name", "kind"]


@admin.register(Twin)
class TwinAdmin(GuardedModelAdmin):
    """Twins with the 'Object permissions' page for per-twin grants to users and groups
    (``twins.view_twin`` to see the twin, ``twins.operate_twin`` to act on it; see
    ``policy.roles``), and the state of each twin's signed policy."""

    list_display = ["slug", "name", "policy", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [AssetInline]

    @admin.display(description="policy in force")
    def policy(self, obj: Twin) -> str:
        from policy.services import active_policy

        verdict = active_policy(obj)
        url = reverse("admin:policy_policydocument_changelist") + f"?twin__id__exact={obj.pk}"
        label = "trusted" if verdict.trusted else "UNTRUSTED (no automation)"
        return format_html('<a href="{}">{}</a>: {}', url, label, verdict.reason)


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "kind"]
    list_filter = ["kind", "twin"]
    search_fields = ["slug", "name"]
