"""The demo's signed policy for the SKAB twin (development only).

The demo signs with a key pair it generates under ``POLICY_DEV_KEY_DIR``
(``$OPSTWIN_DATA_DIR/policy-keys``), which the settings pin only when ``POLICY_PUBLIC_KEYS``
is empty and ``OPSTWIN_PRODUCTION`` is off. A production deployment pins its own keys, signs
offline (``manage.py policy_keygen`` / ``sign_policy``) and never reads that folder; there the
demo's policy stays untrusted and nothing runs automatically.
"""

from __future__ import annotations

import json

from django.conf import settings

from policy.models import PolicyDocument
from policy.rules import SCHEMA
from policy.services import active_policy, publish_policy
from policy.services.documents import next_version
from policy.signing import DEV_KEY_ID, generate_key_pair, load_private_key, sign


def demo_rules(twin_slug: str, version: int) -> dict:
    """policy.v1 for the SKAB pumps. The interlock's 3600 s freshness suits a replay that
    stops after two minutes while people still approve; a live plant would use seconds."""
    return {
        "schema": SCHEMA, "twin": twin_slug, "version": version,
        "actions": {"open_valve": {"risk": "LOW", "rollback": "restore_valve"},
                    "reduce_load": {"risk": "MEDIUM", "rollback": "restore_load"},
                    "emergency_stop": {"risk": "CRITICAL"}},
        "forbidden": ["disable_interlock", "bypass_safety", "override_limits"],
        "thresholds": {"auto_execute": 0.90, "approval": 0.70, "high_risk_max_breach": 0.10},
        "interlocks": [{"id": "motor-temperature", "metric": "Temperature", "op": "<",
                        "value": 96, "max_age_s": 3600, "guards": ["reduce_load", "open_valve"]}],
        "approvals": {"LOW": {"approvers": 1, "ttl_s": 3600},
                      "MEDIUM": {"approvers": 1, "ttl_s": 3600},
                      "HIGH": {"approvers": 1, "ttl_s": 1800},
                      "CRITICAL": {"approvers": 2, "ttl_s": 900}},
        "evidence": {"tolerance_sigmas": 4.0},
        "verification": {"window_s": 60, "max_outside_share": 0.5, "min_samples": 3},
    }


def _unchanged(twin) -> bool:
    latest = PolicyDocument.objects.filter(twin=twin).order_by("-version").first()
    if latest is None or not active_policy(twin).trusted:
        return False
    return json.loads(latest.body) == demo_rules(twin.slug, latest.version)


def ensure_demo_policy(twin) -> str:
    """Sign and publish the demo policy for ``twin`` unless it is already in force; a line
    for the demo's output."""
    key_dir = settings.POLICY_DEV_KEY_DIR
    if key_dir is None:
        return ("policy: POLICY_PUBLIC_KEYS is set, so the demo's development key is not "
                "pinned; publish a policy signed with your key (manage.py sign_policy --twin "
                f"{twin.slug}) or nothing runs automatically")
    private = key_dir / f"{DEV_KEY_ID}.key"
    if not private.exists():
        generate_key_pair(key_dir, DEV_KEY_ID)
    if _unchanged(twin):
        return f"policy: {active_policy(twin).reason}"
    body = json.dumps(demo_rules(twin.slug, next_version(twin)), indent=2)
    _, verdict = publish_policy(twin=twin, body=body, key_id=DEV_KEY_ID, actor="demo",
                                signature=sign(body, load_private_key(private)))
    return f"policy: {verdict.reason} (development key in {key_dir}; never for production)"
