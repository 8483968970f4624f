"""The dashboard's notification settings page: each signed-in user chooses what they are told
about, for which twins, and how (``policy.notifications``). It edits only the caller's own
subscription: the page takes no user from the request, so a forged POST can change nobody
else's, and twins the caller may not see are refused (400)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from policy.choices import NotificationKind
from policy.forms import SubscriptionForm
from policy.models import NotificationDelivery
from policy.notifications import (
    KIND_PERMISSION,
    SubscriptionInvalid,
    delete_subscription,
    subscription_of,
)
from policy.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from twins.scoping import refusal_of_user

RECENT_DELIVERIES = 20


def _context(request: HttpRequest, form: SubscriptionForm) -> dict:
    user = request.user
    receivable = [(label, not refusal_of_user(user, KIND_PERMISSION[kind]))
                  for kind, label in NotificationKind.choices]
    deliveries = (NotificationDelivery.objects.filter(user=user)
                  .select_related("notification").order_by("-pk")[:RECENT_DELIVERIES])
    return {"form": form, "subscription": form.instance, "receivable": receivable,
            "deliveries": deliveries, "saved": form.instance.pk is not None,
            "headers": {"signature": SIGNATURE_HEADER, "timestamp": TIMESTAMP_HEADER,
                        "delivery": DELIVERY_HEADER}}


def _back_to_page() -> HttpResponse:
    response = redirect("notification-settings")
    response.status_code = 303
    return response


@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request: HttpRequest) -> HttpResponse:
    """GET: the caller's choices (the defaults until first saved). POST: save them (303 back
    to the page), or 400 with the form's errors (a webhook URL that is refused included);
    POST with ``reset``: delete the saved choices, back to the defaults (303). Both are
    audited (``policy.notifications.save_subscription`` / ``delete_subscription``)."""
    subscription = subscription_of(request.user)
    if request.method == "POST" and "reset" in request.POST:
        if subscription.pk is not None:
            delete_subscription(subscription, actor=request.user, request=request)
        messages.success(request, "Notification settings reset to the defaults.")
        return _back_to_page()
    form = SubscriptionForm(request.POST if request.method == "POST" else None,
                            instance=subscription,
                            subscriber=request.user)
    if request.method == "POST":
        if form.is_valid():
            try:
                form.save(actor=request.user, request=request)
            except SubscriptionInvalid:
                pass  # the form now carries the error
            else:
                messages.success(request, "Notification settings saved.")
                return _back_to_page()
        return render(request, "policy/notification_settings.html", _context(request, form),
                      status=400)
    return render(request, "policy/notification_settings.html", _context(request, form))
