"""Key generation, signing, the demo's policy, the admin's "new version", the device's acks."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from demo.device import SimulatedDevice
from demo.policy_document import ensure_demo_policy
from policy.checks import policy_keys_configured
from policy.models import PolicyDocument
from policy.services import active_policy
from policy.tests import factories
from twins.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_a_generated_key_signs_a_policy_that_verifies_once_pinned(
        twin, tmp_path, settings, capsys):
    call_command("policy_keygen", "ops-1", "--out", str(tmp_path))
    pinned = capsys.readouterr().out.split("POLICY_PUBLIC_KEYS=")[1].strip()
    assert (tmp_path / "ops-1.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CommandError, match="refusing to overwrite"):
        call_command("policy_keygen", "ops-1", "--out", str(tmp_path))
    policy = tmp_path / "plant.json"
    policy.write_text(factories.policy_body(twin))
    call_command("sign_policy", str(policy), "--key", str(tmp_path / "ops-1.key"),
                 "--key-id", "ops-1", "--twin", "plant")
    assert (tmp_path / "plant.json.sig").read_text().startswith("ops-1:")
    assert active_policy(twin).trusted is False  # ops-1 is not pinned yet
    key_id, public = pinned.split(":", 1)
    settings.POLICY_PUBLIC_KEYS = {key_id: public}
    assert active_policy(twin).trusted is True
    assert PolicyDocument.objects.get().body == policy.read_text()


def test_the_demo_signs_its_policy_with_a_development_key_once(twin, tmp_path, settings):
    settings.POLICY_DEV_KEY_DIR = tmp_path
    settings.POLICY_PUBLIC_KEYS = {}
    assert "verified" in ensure_demo_policy(twin)
    assert (tmp_path / "demo-dev.pub").exists()
    verdict = active_policy(twin)
    assert verdict.trusted and verdict.rules.interlocks[0]["metric"] == "Temperature"
    ensure_demo_policy(twin)
    assert PolicyDocument.objects.count() == 1


def test_the_demo_policy_is_untrusted_when_production_keys_are_pinned(twin, settings):
    settings.POLICY_DEV_KEY_DIR = None
    assert "not pinned" in ensure_demo_policy(twin)
    assert PolicyDocument.objects.count() == 0


def test_a_missing_key_configuration_is_a_system_check_warning(settings):
    settings.POLICY_DEV_KEY_DIR = None
    settings.POLICY_PUBLIC_KEYS = {}
    assert [w.id for w in policy_keys_configured(None)] == ["policy.W001"]
    settings.POLICY_PUBLIC_KEYS = {"k": "x"}
    assert policy_keys_configured(None) == []


def test_the_admin_stores_each_save_as_a_new_audited_version(
        twin, admin_client, signing_key):
    factories.signed_policy(twin, signing_key)
    first = PolicyDocument.objects.get()
    form = admin_client.get(f"/admin/policy/policydocument/add/?from={first.pk}")
    assert "&quot;version&quot;: 2" in form.content.decode()
    body = factories.policy_body(twin, forbidden=["hold"])
    response = admin_client.post("/admin/policy/policydocument/add/", {
        "twin": twin.pk, "body": body.replace("\n", "\r\n"), "key_id": "test",
        "signature": factories.sign(body, signing_key)})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert active_policy(twin).version == 2 and active_policy(twin).trusted
    assert AuditEntry.objects.filter(action="policy.publish").count() == 2
    bad = admin_client.post("/admin/policy/policydocument/add/", {
        "twin": twin.pk, "body": body, "key_id": "test", "signature": ""})
    assert bad.status_code == 200 and "version" in bad.content.decode()
    assert admin_client.get(f"/admin/policy/policydocument/{first.pk}/change/").status_code \
        == 200
    assert PolicyDocument.objects.get(pk=first.pk).body == first.body


@pytest.mark.parametrize(("payload", "status"), [
    ({"command_id": "c1", "action": "reduce_load"}, "ok"),
    ({"command_id": "c2", "action": "self_destruct"}, "rejected"),
    ({"action": "reduce_load"}, "rejected"),
])
def test_the_simulated_device_acks_known_actions_only(payload, status):
    assert SimulatedDevice.answer(json.dumps(payload).encode())["status"] == status
    assert SimulatedDevice.answer(b"not json")["status"] == "rejected"


def test_the_twin_admin_shows_whether_its_policy_is_trusted(twin, admin_client, signing_key):
    assert "UNTRUSTED" in admin_client.get("/admin/twins/twin/").content.decode()
    factories.signed_policy(twin, signing_key)
    page = admin_client.get("/admin/twins/twin/").content.decode()
    assert "trusted</a>: v1 verified" in page
