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
