"""System checks: say loudly when no policy can be trusted (all automation denied)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register()
def policy_keys_configured(app_configs, **kwargs) -> list[Warning]:
    """W001 when neither POLICY_PUBLIC_KEYS nor the development key folder can pin a key."""
    if settings.POLICY_PUBLIC_KEYS or settings.POLICY_DEV_KEY_DIR:
        return []
    return [Warning("POLICY_PUBLIC_KEYS is empty: no policy document can be verified, so "
                    "OpsTwin will not execute anything automatically.",
                    hint="Generate a key with manage.py policy_keygen and set "
                         "POLICY_PUBLIC_KEYS=key_id:base64.", id="policy.W001")]


@register(deploy=True)
def public_url_configured(app_configs, **kwargs) -> list[Warning]:
    """W002 (``check --deploy``) when ``PUBLIC_URL`` is empty: notifications (e-mail,
    webhooks) would link to bare paths a recipient cannot open."""
    if settings.PUBLIC_URL:
        return []
    return [Warning("PUBLIC_URL is empty: notification links would be bare paths, which a "
                    "recipient's mail client or webhook receiver cannot open.",
                    hint="Set PUBLIC_URL=https://<the console's address>.", id="policy.W002")]
