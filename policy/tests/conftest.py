"""Fixtures of the policy tests: a pinned signing key, fast passwords, a simulated device."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from demo.device import SimulatedDevice
from policy.signing import public_key_b64
from policy.tests import factories


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(autouse=True)
def policy_settings(settings, signing_key, tmp_path):
    """Pin only the test key, keep anchors in a temporary file, hash passwords cheaply."""
    settings.POLICY_PUBLIC_KEYS = {"test": public_key_b64(signing_key)}
    settings.POLICY_DEV_KEY_DIR = None
    settings.POLICY_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 3.0
    return settings


@pytest.fixture
def trusted(pump, signing_key):
    """The pump's twin under a signed, trusted policy (defaults) and a fresh normal reading."""
    factories.reading(pump)
    document, verdict = factories.signed_policy(pump.twin, signing_key)
    assert verdict.trusted, verdict.reason
    return document


@pytest.fixture
def prefix(settings) -> str:
    """A topic prefix of this test's own, so parallel runs never hear each other."""
    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    return settings.MQTT_TOPIC_PREFIX


@pytest.fixture
def device(mqtt_url, prefix, twin):
    """The demo's simulated asset on the real broker, acknowledging the twin's commands."""
    sim = SimulatedDevice(mqtt_url, twin.slug).start()
    yield sim
    sim.stop()


@pytest.fixture
def second_supervisor(django_user_model, users):
    from tests.fixtures import make_user

    return make_user(django_user_model, "supervisor", name="supervisor-2")
