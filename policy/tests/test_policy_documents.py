"""Signed, versioned policy documents: every way a policy can be untrusted denies automation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.utils import timezone

from policy.choices import Decision, ProposalStatus
from policy.models import PolicyDocument, PolicyHighWater
from policy.rules import PolicyInvalid
from policy.services import active_policy, propose, publish_policy
from policy.signing import public_key_b64, sign, verify
from policy.tests import factories
from twins.models import AuditEntry, ChangeEvent

pytestmark = pytest.mark.django_db


def assert_untrusted_every_time(twin, fragment: str) -> None:
    for _ in range(3):
        verdict = active_policy(twin)
        assert verdict.trusted is False
        assert fragment in verdict.reason


def test_a_signed_policy_is_trusted_and_its_acceptance_audited(twin, signing_key):
    document, verdict = factories.signed_policy(twin, signing_key, thresholds={
        "auto_execute": 0.8, "approval": 0.5})
    assert verdict.trusted and verdict.version == 1
    assert verdict.rules.auto_execute_at == 0.8
    assert PolicyHighWater.objects.get(twin=twin).version == 1
    assert list(AuditEntry.objects.filter(resource_type="policy").values_list(
        "action", flat=True)) == ["policy.publish", "policy.accept"]
    assert ChangeEvent.objects.filter(type="policy.created", resource_id=str(document.pk)).exists()


def test_no_policy_at_all_denies_automation(twin):
    assert_untrusted_every_time(twin, "no policy document")


def test_an_unsigned_policy_denies_automation_every_time(twin):
    publish_policy(twin=twin, body=factories.policy_body(twin))
    assert_untrusted_every_time(twin, "unsigned")


def test_a_badly_signed_policy_denies_automation(twin, signing_key):
    body = factories.policy_body(twin)
    forged = sign(body.replace('"version": 1', '"version": 1 '), signing_key)
    publish_policy(twin=twin, body=body, signature=forged, key_id="test")
    assert_untrusted_every_time(twin, "does not match")


def test_a_garbage_signature_denies_automation(twin):
    publish_policy(twin=twin, body=factories.policy_body(twin), signature="!!!", key_id="test")
    assert_untrusted_every_time(twin, "malformed")


def test_a_key_that_is_not_pinned_is_not_trusted_even_if_the_signature_is_valid(twin):
    rogue = Ed25519PrivateKey.generate()  # e.g. a key someone stored beside the policy
    body = factories.policy_body(twin)
    publish_policy(twin=twin, body=body, signature=sign(body, rogue), key_id="rogue")
    assert_untrusted_every_time(twin, "not pinned")


def test_only_the_pinned_public_key_counts_not_one_under_the_same_id(twin, settings):
    rogue = Ed25519PrivateKey.generate()
    body = factories.policy_body(twin)
    publish_policy(twin=twin, body=body, signature=sign(body, rogue), key_id="test")
    assert_untrusted_every_time(twin, "does not match")
    settings.POLICY_PUBLIC_KEYS = {"test": public_key_b64(rogue)}
    assert active_policy(twin).trusted is True


def test_a_policy_signed_for_another_twin_is_not_trusted_here(twin, signing_key):
    body = factories.policy_body(twin).replace('"twin": "plant"', '"twin": "elsewhere"')
    with pytest.raises(PolicyInvalid):
        publish_policy(twin=twin, body=body, signature=sign(body, signing_key), key_id="test")
    PolicyDocument.objects.create(twin=twin, version=1, body=body, key_id="test",
                                  signature=sign(body, signing_key))
    assert_untrusted_every_time(twin, "for twin 'elsewhere'")


def test_an_old_signed_body_replayed_under_a_new_version_is_not_trusted(twin, signing_key):
    factories.signed_policy(twin, signing_key)
    old = PolicyDocument.objects.get(twin=twin, version=1)
    PolicyDocument.objects.create(twin=twin, version=2, body=old.body, signature=old.signature,
                                  key_id="test")
    assert_untrusted_every_time(twin, "body says version 1, stored as v2")


def test_a_rollback_below_the_high_water_mark_denies_automation_every_time(twin, signing_key):
    factories.signed_policy(twin, signing_key)
    factories.signed_policy(twin, signing_key, forbidden=["reduce_load"])
    assert active_policy(twin).version == 2
    PolicyDocument.objects.filter(twin=twin, version=2).delete()  # the newer version vanishes
    assert_untrusted_every_time(twin, "rollback: v1 is below the accepted v2")
    assert PolicyHighWater.objects.get(twin=twin).version == 2


def test_a_different_body_under_the_accepted_version_is_not_trusted(twin, signing_key):
    factories.signed_policy(twin, signing_key)
    PolicyDocument.objects.filter(twin=twin).delete()
    body = factories.policy_body(twin, version=1, forbidden=["x"])
    PolicyDocument.objects.create(twin=twin, version=1, body=body, key_id="test",
                                  signature=sign(body, signing_key))
    assert_untrusted_every_time(twin, "differs from the body accepted as v1")


def test_a_newer_signed_version_restores_trust_after_a_bad_one(twin, signing_key):
    publish_policy(twin=twin, body=factories.policy_body(twin))
    assert active_policy(twin).trusted is False
    _, verdict = factories.signed_policy(twin, signing_key)
    assert verdict.trusted and verdict.version == 2


def test_publishing_needs_the_next_version_in_the_signed_body(twin, signing_key):
    factories.signed_policy(twin, signing_key)
    body = factories.policy_body(twin, version=1)
    with pytest.raises(PolicyInvalid, match="version 2"):
        publish_policy(twin=twin, body=body, signature=sign(body, signing_key), key_id="test")
    with pytest.raises(PolicyInvalid, match="not JSON"):
        publish_policy(twin=twin, body="{nope")


def test_a_signed_but_invalid_policy_is_untrusted(twin, signing_key):
    factories.signed_policy(twin, signing_key, thresholds={"auto_execute": 0.5,
                                                           "approval": 0.9})
    assert_untrusted_every_time(twin, "approval must not exceed")


def test_an_untrusted_policy_may_only_tighten(twin):
    publish_policy(twin=twin, body=factories.policy_body(
        twin, forbidden=["open_valve"], thresholds={"auto_execute": 0.1, "approval": 0.0},
        actions={"reduce_load": {"risk": "LOW"}, "hold": {"risk": "HIGH"}},
        approvals={"MEDIUM": {"approvers": 3, "ttl_s": 60}, "LOW": {"approvers": 1,
                                                                    "ttl_s": 999999}},
        interlocks=[{"metric": "Temperature", "op": "<", "value": 1, "guards": ["hold"]}]))
    rules = active_policy(twin).rules
    assert "open_valve" in rules.forbidden and "disable_interlock" in rules.forbidden
    assert (rules.auto_execute_at, rules.approval_at) == (0.90, 0.70)
    assert rules.risk_of("reduce_load") == "MEDIUM" and rules.risk_of("hold") == "HIGH"
    assert rules.approval_rule("MEDIUM").approvers == 3
    assert rules.approval_rule("MEDIUM").ttl_s == 60
    assert rules.approval_rule("LOW").ttl_s == 4 * 3600
    assert len(rules.interlocks) == 1


def test_no_document_can_lower_critical_below_two_approvers(twin, signing_key):
    _, verdict = factories.signed_policy(twin, signing_key, approvals={
        "CRITICAL": {"approvers": 1, "ttl_s": 60}})
    assert verdict.trusted
    assert verdict.rules.approval_rule("CRITICAL").approvers == 2


def test_an_auto_decision_under_an_untrusted_policy_waits_for_a_human(pump, signing_key):
    """GIVEN a policy that would auto-execute at this confidence, WHEN it is signed the
    proposal is approved automatically, and WHEN its successor is unsigned the same proposal
    waits for a human (the confidence, 0.75, is in the default approval tier)."""
    now = timezone.now()
    for k in (3, 2, 1, 0):
        factories.reading(pump, ts=now - timedelta(seconds=k))
    thresholds = {"auto_execute": 0.3, "approval": 0.2}
    factories.signed_policy(pump.twin, signing_key, thresholds=thresholds)
    run = factories.simulation(pump)
    auto = propose(asset=pump, action="reduce_load", parameters={}, simulation=run)
    assert auto.decision == Decision.AUTO_EXECUTE and auto.policy_trusted
    publish_policy(twin=pump.twin, body=factories.policy_body(pump.twin, thresholds=thresholds))
    for _ in range(2):
        held = propose(asset=pump, action="reduce_load", parameters={}, simulation=run)
        assert held.decision == Decision.REQUIRE_APPROVAL
        assert held.status == ProposalStatus.PENDING_APPROVAL
        assert held.policy_trusted is False and held.policy_version == 2


def test_a_stored_policy_version_cannot_be_edited_in_place(twin, signing_key):
    factories.signed_policy(twin, signing_key)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        PolicyDocument.objects.update(body="{}")
    assert PolicyDocument.objects.get().version == 1


def test_signatures_are_over_the_exact_bytes(signing_key):
    keys = {"k": public_key_b64(signing_key)}
    body = '{"a": 1}'
    signature = sign(body, signing_key)
    assert verify(body, signature, "k", keys).ok is True
    assert verify('{"a":1}', signature, "k", keys).ok is False
    assert verify(body, "", "k", keys).detail == "unsigned"


def test_the_settings_refuse_a_malformed_public_key():
    from opstwin_site.settings import _policy_public_keys

    good = public_key_b64(Ed25519PrivateKey.generate())
    assert _policy_public_keys(f"a:{good}, b:{good}") == {"a": good, "b": good}
    for bad in ("nokey", "a:abc", f":{good}"):
        with pytest.raises(ImproperlyConfigured, match="POLICY_PUBLIC_KEYS"):
            _policy_public_keys(bad)
