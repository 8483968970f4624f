"""Django admin of the policy app: policy versions (add = publish a new version), read-only
proposals and approvals, and the twin list's signed-policy column. Changes go through
``policy.services``."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from policy.choices import DeliveryStatus
from policy.forms import SubscriptionAdminForm
from policy.models import (
    Approval,
    Notification,
    NotificationDelivery,
    NotificationSubscription,
    PolicyDocument,
    Proposal,
)
from policy.notifications import (
    SubscriptionInvalid,
    delete_subscription,
    enqueue_delivery,
    save_subscription,
)
from policy.rules import PolicyInvalid, parse_body
from policy.services import active_policy, publish_policy
from policy.services.documents import next_version
from policy.signing import verify
from twins.admin import ReadOnlyAdmin, TwinAdmin
from twins.models import Twin


@admin.register(Proposal)
class ProposalAdmin(ReadOnlyAdmin):
    list_display = ["id", "asset", "action", "risk_level", "confidence", "decision", "status",
                    "created_at"]
    list_filter = ["status", "decision", "risk_level", "action"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "approver", "role", "created_at", "expires_at", "invalidated_at"]


@admin.register(NotificationSubscription)
class NotificationSubscriptionAdmin(admin.ModelAdmin):
    """Anyone's notification choices (each user edits their own on the dashboard's
    notification settings page); twins are validated against the chosen user's scope."""

    form = SubscriptionAdminForm
    list_display = ["user", "email", "webhook_url", "all_twins", "updated_at"]
    list_filter = ["email", "all_twins"]
    search_fields = ["user__username", "user__email", "webhook_url"]
    readonly_fields = ["webhook_secret", "updated_at"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """The add/change page; a webhook URL the form accepted but the save refused (its host
        resolved to another address in between) sends the admin back to the page with the
        reason, nothing saved, instead of a server error. The view's transaction rolls back."""
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SubscriptionInvalid as refused:
            self.message_user(request, f"Not saved. {refused}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # Saved and deleted through the audited services (policy.notifications).
    def save_model(self, request, obj, form, change) -> None:
        save_subscription(obj, twins=list(form.cleaned_data.get("twins") or []),
                          actor=request.user, request=request)

    def save_related(self, request, form, formsets, change) -> None:
        for formset in formsets:  # the twins were set by save_subscription
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request, obj) -> None:
        delete_subscription(obj, actor=request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for subscription in queryset:
            delete_subscription(subscription, actor=request.user, request=request)


class DeliveryInline(admin.TabularInline):
    model = NotificationDelivery
    extra = 0
    fields = ["user", "channel", "target", "status", "attempts", "response_status",
              "last_error", "delivered_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "twin", "subject"]
    list_filter = ["kind", "twin"]
    search_fields = ["subject", "resource_id"]
    inlines = [DeliveryInline]


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin):
    """Every delivery and its outcome; a failed one can be queued again (action)."""

    list_display = ["created_at", "notification", "user", "channel", "status", "attempts",
                    "response_status", "last_error"]
    list_filter = ["status", "channel", "notification__kind"]
    actions = ["send_again"]

    @admin.action(description="Send the selected failed deliveries again")
    def send_again(self, request, queryset) -> None:
        ids = list(queryset.filter(status=DeliveryStatus.FAILED).values_list("pk", flat=True))
        NotificationDelivery.objects.filter(pk__in=ids).update(status=DeliveryStatus.PENDING)
        for delivery_id in ids:
            enqueue_delivery(delivery_id)
        self.message_user(request, f"{len(ids)} delivery(ies) queued again.")

    def has_change_permission(self, request, obj=None):
        # The action needs change rights on the list; the rows stay read-only (no form).
        return obj is None and request.user.has_perm("policy.change_notificationdelivery")


class PolicyDocumentForm(forms.ModelForm):
    """A new version: the exact signed body (LF line endings), its signature and key id."""

    body = forms.CharField(strip=False, widget=forms.Textarea(attrs={"rows": 24, "cols": 100}),
                           help_text="The exact text that was signed (sign it offline with "
                                     "manage.py sign_policy). Its \"version\" must be the next "
                                     "version and its \"twin\" this twin.")

    class Meta:
        model = PolicyDocument
        fields = ["twin", "body", "signature", "key_id"]

    def clean_body(self) -> str:
        # Browsers submit textarea newlines as CRLF; bodies are signed and stored with LF.
        return self.cleaned_data["body"].replace("\r\n", "\n")

    def clean(self) -> dict:
        data = super().clean()
        twin, body = data.get("twin"), data.get("body")
        if twin is None or body is None:
            return data
        try:
            parsed = parse_body(body)
        except PolicyInvalid as exc:
            self.add_error("body", str(exc))
            return data
        expected = next_version(twin)
        if parsed.get("twin") != twin.slug or parsed.get("version") != expected:
            self.add_error("body", f'must name "twin": "{twin.slug}" and "version": {expected}')
        return data


@admin.register(PolicyDocument)
class PolicyDocumentAdmin(admin.ModelAdmin):
    """Each save is a new, audited version (``publish_policy``); versions are never edited."""

    form = PolicyDocumentForm
    list_display = ["twin", "version", "key_id", "signature_check", "created_at", "created_by"]
    list_filter = ["twin"]
    readonly_fields = ["version", "created_at", "created_by"]

    @admin.display(description="signature")
    def signature_check(self, obj: PolicyDocument) -> str:
        return verify(obj.body, obj.signature, obj.key_id).detail

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:  # an existing version is history
            return ["twin", "version", "body", "signature", "key_id", "created_at", "created_by"]
        return super().get_readonly_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        latest = PolicyDocument.objects.filter(pk=request.GET.get("from")).first()
        if latest is not None:
            initial |= {"twin": latest.twin_id, "key_id": latest.key_id,
                        "body": latest.body.replace(f'"version": {latest.version}',
                                                    f'"version": {next_version(latest.twin)}')}
        return initial

    def save_model(self, request, obj, form, change):
        document, verdict = publish_policy(
            twin=obj.twin, body=obj.body, signature=obj.signature, key_id=obj.key_id,
            actor=request.user, request=request)
        obj.pk, obj.version, obj.created_at = document.pk, document.version, document.created_at
        level = messages.SUCCESS if verdict.trusted else messages.WARNING
        self.message_user(request, f"Stored as v{document.version}: {verdict.reason}", level)


admin.site.unregister(Twin)


@admin.register(Twin)
class TwinPolicyAdmin(TwinAdmin):
    """``twins.admin.TwinAdmin`` plus the state of each twin's signed policy (policy sits
    above twins, so it extends the twin admin rather than twins importing policy)."""

    list_display = [*TwinAdmin.list_display[:2], "policy", *TwinAdmin.list_display[2:]]

    @admin.display(description="policy in force")
    def policy(self, obj: Twin) -> str:
        verdict = active_policy(obj)
        url = reverse("admin:policy_policydocument_changelist") + f"?twin__id__exact={obj.pk}"
        label = "trusted" if verdict.trusted else "UNTRUSTED (no automation)"
        return format_html('<a href="{}">{}</a>: {}', url, label, verdict.reason)
