from django.contrib import admin

from policy.models import AuditEntry, Proposal


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = ["id", "asset", "action", "risk_level", "confidence", "decision", "status",
                    "created_at"]
    list_filter = ["status", "decision", "risk_level", "action"]
    readonly_fields = [f.name for f in Proposal._meta.fields]  # changes go through services

    def has_add_permission(self, request):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit chain is append-only."""

    list_display = ["seq", "at", "actor", "role", "action", "resource_type", "resource_id"]
    list_filter = ["action", "resource_type"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
