from django import forms

from policy import notifications, webhooks
from policy.choices import NotificationKind
from policy.models import NotificationSubscription
from policy.models.notification import new_webhook_secret
from twins.models import Twin
from twins.scoping import visible_twins


class ReasonForm(forms.Form):
    """The reason a supervisor gives to reject or roll back (required, 3..2000 characters)."""

    reason = forms.CharField(
        min_length=3, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


class SubscriptionForm(forms.ModelForm):
    """A user's notification choices (``NotificationSubscription``): kinds, twins (only twins
    the subscriber may see are valid), channels, and an optional new webhook secret.

    ``subscriber`` is the user whose choices these are (the signed-in user on the dashboard;
    the chosen user in Django admin, where it comes from the ``user`` field)."""

    kinds = forms.MultipleChoiceField(
        label="Tell me when", choices=NotificationKind.choices, required=False,
        widget=forms.CheckboxSelectMultiple)
    twins = forms.ModelMultipleChoiceField(
        queryset=Twin.objects.order_by("slug"), required=False,
        widget=forms.CheckboxSelectMultiple, help_text="Used when 'all twins' is off.")
    webhook_url = forms.URLField(
        label="Webhook URL", required=False, max_length=500, assume_scheme="https",
        help_text="Receives a signed JSON POST per notification (http or https, a public "
                  "address unless the host is on NOTIFICATION_WEBHOOK_ALLOWED_HOSTS).")
    new_secret = forms.BooleanField(
        label="Replace the webhook secret", required=False,
        help_text="Receivers must be given the new one; the old one stops working at once.")

    class Meta:
        model = NotificationSubscription
        fields = ["kinds", "email", "webhook_url", "all_twins", "twins"]

    def __init__(self, *args, subscriber=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subscriber = subscriber
        if subscriber is not None:
            self.fields["twins"].queryset = visible_twins(subscriber).order_by("slug")

    def clean_webhook_url(self) -> str:
        """The URL, if ``policy.webhooks.refusal`` lets it through (http(s), public addresses
        or an allow-listed host)."""
        url = self.cleaned_data.get("webhook_url") or ""
        why = webhooks.refusal(url) if url else None
        if why:
            raise forms.ValidationError(why, code="webhook_refused")
        return url

    def clean(self) -> dict:
        data = super().clean()
        subscriber = self.subscriber or data.get("user")
        chosen = data.get("twins")
        if subscriber is not None and chosen:
            allowed = set(visible_twins(subscriber).values_list("pk", flat=True))
            outside = sorted(t.slug for t in chosen if t.pk not in allowed)
            if outside:
                self.add_error("twins", f"{subscriber} may not see {', '.join(outside)}")
        return data

    def save(self, commit: bool = True, *, actor=None,
             request=None) -> NotificationSubscription:
        """Save through ``policy.notifications.save_subscription`` (audited as ``actor``,
        default the subscriber). ``commit=False`` (Django admin) only applies the new secret
        and returns the unsaved instance; the admin then calls the service itself."""
        if not commit:
            if self.cleaned_data.get("new_secret"):
                self.instance.webhook_secret = new_webhook_secret()
            return super().save(commit=False)
        try:
            return notifications.save_subscription(
                self.instance, twins=list(self.cleaned_data.get("twins") or []),
                new_secret=bool(self.cleaned_data.get("new_secret")),
                actor=actor if actor is not None else self.subscriber, request=request)
        except notifications.SubscriptionInvalid as exc:  # e.g. DNS changed since clean()
            for name, message in exc.errors.items():
                self.add_error(name, message)
            raise


class SubscriptionAdminForm(SubscriptionForm):
    """The same choices in Django admin, for any user (validated against that user)."""

    class Meta(SubscriptionForm.Meta):
        fields = ["user", *SubscriptionForm.Meta.fields]
