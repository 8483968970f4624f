"""Admin: agent tokens (issued, updated and revoked here through ``aiw.services``, audited)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from aiw import services
from aiw.models import AgentToken, TokenScope


class AgentTokenForm(forms.ModelForm):
    """New tokens: the secret is generated on save, never typed in."""

    scopes = forms.MultipleChoiceField(choices=TokenScope.choices, initial=[TokenScope.READ],
                                       widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = AgentToken
        fields = ["user", "name", "scopes", "expires_at", "rate"]


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    """Create a token (its secret is shown once, on the next page) or revoke tokens."""

    form = AgentTokenForm
    list_display = ["name", "user", "prefix", "scopes", "expires_at", "revoked_at",
                    "last_used_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["prefix", "created_at", "last_used_at", "revoked_at"]
        return ["user", "name", "scopes", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_fields(self, request, obj=None):
        fields = ["user", "name", "scopes", "expires_at", "rate"]
        return fields if obj is None else [*fields, "prefix", "created_at", "last_used_at",
                                           "revoked_at"]

    def save_model(self, request: HttpRequest, obj: AgentToken, form, change: bool) -> None:
        """Through ``aiw.services`` (audited, on the feed), never a plain save."""
        if change:
            services.update_token(obj, expires_at=obj.expires_at, rate=obj.rate,
                                  actor=request.user, request=request)
            return
        row, plaintext = services.issue_token(
            user=obj.user, name=obj.name, scopes=form.cleaned_data["scopes"],
            expires_at=obj.expires_at, rate=obj.rate, actor=request.user, request=request)
        obj.pk, obj.prefix = row.pk, row.prefix
        request.aiw_token_plaintext = plaintext

    def response_add(self, request: HttpRequest, obj: AgentToken, post_url_continue=None
                     ) -> HttpResponse:
        """Show the secret once, in this response only (it is stored nowhere)."""
        context = {**self.admin_site.each_context(request), "token": obj,
                   "plaintext": request.aiw_token_plaintext, "opts": self.model._meta,
                   "title": "Agent token created"}
        return TemplateResponse(request, "aiw/admin/token_created.html", context)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the token's history stays on the audit chain

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:
        revoked = sum(services.revoke_token(pk, actor=request.user, request=request)
                      for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
