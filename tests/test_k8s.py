"""The Kubernetes manifests in ``deploy/k8s/``, checked without a cluster.

Schema: every resource is validated against the Kubernetes OpenAPI-derived JSON schemas shipped
in the ``kubernetes-validate`` wheel (offline, strict: unknown fields are errors), for the
oldest Kubernetes release the manifests target. kubeconform itself is in none of the package
registries this project installs from; kubernetes-validate checks the same schemas.
Structure: probes, resource limits, the unprivileged pod settings, the ingest shared
subscription with one set of credentials per pod, and settings that exist in ``.env.example``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.test_deploy import example_env

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def manifests() -> dict[str, list[dict]]:
    """Every manifest file except the kustomization: its resources (YAML documents)."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def resources(*, applied_only: bool = True) -> list[dict]:
    return [
        doc
        for name, docs in manifests().items()
        if not (applied_only and name == "secrets.example.yaml")
        for doc in docs
    ]


def workloads() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in resources() if doc["kind"] in WORKLOAD_KINDS}


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def config_map() -> dict[str, str]:
    (cm,) = [doc for doc in resources() if doc["kind"] == "ConfigMap"]
    return cm["data"]


def example_secrets() -> dict[str, dict[str, str]]:
    return {
        doc["metadata"]["name"]: doc["stringData"] for doc in manifests()["secrets.example.yaml"]
    }


@pytest.mark.parametrize(
    "resource", resources(applied_only=False), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_every_resource_matches_the_kubernetes_schema(resource):
    import kubernetes_validate

    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_refuses_a_misspelled_field():
    import kubernetes_validate

    web = workloads()["opstwin-web"]
    containers(web)[0]["livenesProbe"] = containers(web)[0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == set(manifests()) - {"secrets.example.yaml"}


def test_every_container_has_resource_limits_and_runs_unprivileged():
    for name, workload in workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's user
        for container in pod["containers"]:
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, (name, kind)
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/data", "/tmp"} <= mounts, name  # the only writable folders


def test_the_web_is_live_on_health_and_ready_on_ready_with_an_allowed_host():
    (web,) = containers(workloads()["opstwin-web"])
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    assert web["startupProbe"]["httpGet"]["path"] == "/health"
    assert web["readinessProbe"]["httpGet"]["path"] == "/ready"
    allowed = config_map()["ALLOWED_HOSTS"].split(",")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        (header,) = web[probe]["httpGet"]["httpHeaders"]
        assert header["name"] == "Host" and header["value"] in allowed, probe
    assert "--no-server-header" in web["command"]
    assert workloads()["opstwin-web"]["spec"]["replicas"] >= 2


def test_ingest_runs_two_subscribers_on_the_shared_subscription_each_with_its_own_login():
    ingest = workloads()["opstwin-ingest"]
    assert ingest["kind"] == "StatefulSet"  # stable pod names = stable MQTT client ids
    assert ingest["spec"]["replicas"] == 2
    (container,) = containers(ingest)
    command = container["command"]
    assert command[command.index("--share-group") + 1] == "opstwin"
    assert command[command.index("--client-id") + 1] == "$(POD_NAME)"
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MQTT_URL_FILE"]["value"] == "/etc/opstwin/mqtt/$(POD_NAME)"
    mqtt_logins = example_secrets()["opstwin-mqtt"]
    users = set()
    for ordinal in range(ingest["spec"]["replicas"]):
        pod = f"{ingest['metadata']['name']}-{ordinal}"
        users.add(re.match(r"mqtt://([^:]+):", mqtt_logins[pod]).group(1))
    assert len(users) == 2
    assert "ingest" in container["livenessProbe"]["exec"]["command"][-1]


def test_workers_cover_every_routed_queue_and_beat_is_a_single_replica():
    from django.conf import settings

    queues = set()
    for workload in workloads().values():
        command = containers(workload)[0]["command"]
        if command[:4] == ["celery", "-A", "opstwin_site", "worker"]:
            queues |= set(command[command.index("-Q") + 1].split(","))
            assert containers(workload)[0]["livenessProbe"]["exec"]
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert queues == routed | {settings.CELERY_TASK_DEFAULT_QUEUE}
    beat = workloads()["opstwin-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_every_setting_named_is_in_env_example_and_every_secret_key_exists():
    listed = set(example_env())
    assert set(config_map()) - listed == set()
    secrets = example_secrets()
    for name, workload in workloads().items():
        for container in containers(workload):
            for item in container.get("env", []):
                setting = item["name"].removesuffix("_FILE")
                assert setting in listed or setting == "POD_NAME", (name, item["name"])
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (name, ref)
