"""Every state a resource can reach is described by the schemas the server serves (issue 13
item 1): resources are driven through their lifecycles by the services and the API, and every
API response and every feed event (``/diff``) is validated against the schemas fetched from
``/schemas`` over HTTP, resolving their ``$ref``s by fetching, as an agent's validator would.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from functools import cache
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.test import Client, TestCase
from django.utils.dateparse import parse_datetime
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from demo.device import SimulatedDevice
from policy import services
from policy.choices import Decision, ProposalStatus
from policy.services.execution import claim_execution, complete_execution, complete_rollback
from policy.signing import public_key_b64
from policy.tests import factories

pytestmark = pytest.mark.django_db
FLOW = "Volume Flow RateRMS"
PROPOSAL_STATES = {s.value for s in ProposalStatus} - {"proposed"}  # "proposed" is reserved


class Served:
    """The schemas as an agent sees them: the index at /schemas, each schema fetched from its
    URL on first use (``$ref``s included), validated with format checking on."""

    def __init__(self, client: Client, index: str = "/schemas") -> None:
        self.client = client
        self.urls = {e["name"]: e["url"] for e in client.get(index).json()["schemas"]}
        self.registry = Registry(retrieve=cache(self._fetch))
        self.seen: list[tuple[str, str]] = []

    def _fetch(self, uri: str) -> Resource:
        response = self.client.get(urlsplit(uri).path)
        assert response.status_code == 200, uri
        document = response.json()
        assert document["$id"] == uri, "a schema's $id is the URL it is served at"
        return Resource.from_contents(document)

    def errors(self, name: str, document: object) -> list[str]:
        validator = Draft202012Validator({"$ref": self.urls[name]}, registry=self.registry,
                                         format_checker=FormatChecker())
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in validator.iter_errors(document)]

    def check(self, name: str, document: object, where: str = "") -> None:
        assert self.errors(name, document) == [], f"{where or name}: {document}"
        self.seen.append((name, document.get("status", "") if isinstance(document, dict)
                          else ""))

    def response(self, response, name: str, status: int) -> dict:
        assert response.status_code == status, response.content[:500]
        body = response.json()
        self.check(name, body, f"{response.request['PATH_INFO']} → {name}")
        return body

    def feed(self, client: Client) -> list[dict]:
        """Every event on /diff, each validated as change-event.v1 (which validates its data
        against the resource's schema); returns them."""
        page = client.get("/diff", {"limit": 1000}).json()
        assert not page["has_more"]
        for event in page["events"]:
            self.check("change-event.v1", event, f"event {event['type']} by {event['actor']}")
        return page["events"]


@pytest.fixture
def served(client) -> Served:
    return Served(client)


@pytest.fixture
def plant(pump, settings, tmp_path, mqtt_url):
    """The pump's twin under a signed, trusted policy; a simulated device acking commands."""
    key = Ed25519PrivateKey.generate()
    settings.POLICY_PUBLIC_KEYS = {"test": public_key_b64(key)}
    settings.POLICY_DEV_KEY_DIR = None
    settings.POLICY_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 3.0
    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    factories.reading(pump)
    factories.signed_policy(pump.twin, key)
    device = SimulatedDevice(mqtt_url, pump.twin.slug).start()
    yield device
    device.stop()


def _observe(proposal, values: list[float]) -> None:
    """Flow readings inside the verification window, then one past its end."""
    start = parse_datetime(proposal.verification["from_ts"])
    factories.window(proposal.asset, FLOW, values, start=start + timedelta(seconds=1))
    factories.reading(proposal.asset, {FLOW: 125.0}, ts=start + timedelta(seconds=61))


def _pump(like, n: int):
    """Another pump of the twin with a normal reading now: verification windows leave readings
    dated ahead of the clock on the first, which any later evidence check reads as drift."""
    from twins.models import Asset

    asset = Asset.objects.create(twin=like.twin, slug=f"pump-{n}", name=f"Pump {n}",
                                 kind=like.kind, metrics=like.metrics)
    factories.reading(asset)
    return asset


def _post(client: Client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def test_every_proposal_state_validates_in_responses_and_on_the_feed(
        plant, pump, users, served, supervisor_client, executor_client, admin_client, settings):
    """GIVEN proposals driven along every path (approve → execute → verify → roll back;
    reject; expire; analysis; a refused command; a command given up on; a verification breach
    that rolls back; an inconclusive verification; a refused rollback),
    WHEN each state is read from /proposals/{id} and the whole feed from /diff,
    THEN every response and every event validates against the served schemas, and together
    they show every status a proposal can have."""
    def read(proposal) -> dict:
        return served.response(admin_client.get(f"/proposals/{proposal.pk}"), "proposal.v1", 200)

    # approve → execute (claimed, in flight) → executed → verifying → verified → rollback
    first = factories.proposal(pump)
    assert read(first)["status"] == "pending_approval"
    url = f"/proposals/{first.pk}"
    assert served.response(_post(supervisor_client, f"{url}/approve"), "proposal.v1",
                           200)["status"] == "approved"
    executing = served.response(_post(executor_client, f"{url}/execute"), "proposal.v1", 202)
    assert executing["status"] == "executing" and executing["execution"]["attempts"] == 0
    verifying = complete_execution(first.pk)
    assert read(first)["status"] == "verifying" and read(first)["execution"]["acknowledged"]
    _observe(verifying, [124.0, 126.0, 125.0])
    assert services.verify_proposal(first.pk).status == ProposalStatus.VERIFIED
    assert read(first)["status"] == "verified"
    rolling = served.response(_post(supervisor_client, f"{url}/rollback", {"reason": "undo it"}),
                              "proposal.v1", 202)
    assert rolling["status"] == "verified" and rolling["rollback"]["reason"] == "undo it"
    complete_rollback(first.pk)
    assert read(first)["status"] == "rolled_back"

    # reject; expire; needs analysis
    rejected = factories.proposal(pump)
    assert served.response(_post(supervisor_client, f"/proposals/{rejected.pk}/reject",
                                 {"reason": "not now"}), "proposal.v1", 200)["status"] == \
        "rejected"
    expiring = factories.proposal(pump, expires_in_s=-1)
    services.expire_proposals()
    assert read(expiring)["status"] == "expired"
    analysis = factories.proposal(pump, status=ProposalStatus.NEEDS_ANALYSIS,
                                  decision=Decision.REQUIRE_ANALYSIS, approvals_required=0)
    assert read(analysis)["status"] == "needs_analysis"

    # the asset refuses the command; a command nobody answers is given up on
    refused = factories.approved(_pump(pump, 2), users["supervisor"], action="bogus_action")
    assert services.execute_proposal(refused.pk).status == ProposalStatus.FAILED
    assert read(refused)["execution"]["effect"]["status"] == "rejected"
    abandoned = factories.approved(_pump(pump, 3), users["supervisor"])
    claim_execution(abandoned.pk)
    settings.POLICY_COMMAND_MAX_ATTEMPTS = 0
    assert complete_execution(abandoned.pk).status == ProposalStatus.FAILED
    assert read(abandoned)["execution"]["effect"]["status"] == "unknown"
    settings.POLICY_COMMAND_MAX_ATTEMPTS = 3

    # a breach rolls back by itself; too few readings leave it executed (inconclusive)
    breached = services.execute_proposal(
        factories.approved(_pump(pump, 4), users["supervisor"]).pk)
    _observe(breached, [101.0, 99.0, 100.0])
    assert services.verify_proposal(breached.pk).status == ProposalStatus.ROLLED_BACK
    assert read(breached)["verification"]["outcome"] == "breach"
    quiet = services.execute_proposal(factories.approved(_pump(pump, 5), users["supervisor"]).pk)
    services.verify_proposal(quiet.pk, now=quiet.verify_until + timedelta(seconds=1))
    assert read(quiet)["status"] == "executed"

    # a rollback the asset refuses: failed, with the rollback's recorded outcome
    unrolled = services.execute_proposal(
        factories.approved(_pump(pump, 6), users["supervisor"], rollback_action="bogus").pk)
    served.response(_post(supervisor_client, f"/proposals/{unrolled.pk}/rollback",
                          {"reason": "undo it"}), "proposal.v1", 202)
    complete_rollback(unrolled.pk)
    assert read(unrolled)["status"] == "failed"
    assert read(unrolled)["rollback"]["effect"]["status"] == "rejected"

    listed = admin_client.get("/proposals")
    assert listed.status_code == 200 and len(listed.json()) == 9
    for item in listed.json():
        served.check("proposal.v1", item, f"/proposals item {item['id']}")
    events = served.feed(admin_client)
    on_feed = {e["data"]["status"] for e in events if e["resource_type"] == "proposal"}
    assert on_feed >= {"approved", "executing", "executed", "verifying", "verified", "failed",
                       "expired", "rejected", "rolled_back"}
    in_responses = {status for name, status in served.seen if name == "proposal.v1"}
    assert in_responses == PROPOSAL_STATES
    assert {"policy.created", "policy.updated"} <= {e["type"] for e in events}


def test_every_other_resource_state_validates_in_responses_and_on_the_feed(
        pump, users, served, admin_client, settings):
    """GIVEN a twin and assets created, telemetry with a pressure step (an anomaly opened,
    answered with a what-if and a proposal), the anomaly acknowledged and then cleared by
    normal readings, simulation runs inline, queued then cancelled, queued then run, and
    failed,
    WHEN the responses and the whole feed are read,
    THEN all validate against the served schemas and show each of those states."""
    from demo.provision import create_skab_twin
    from simulation.services import execute_run, run_what_if
    from telemetry.anomalies import acknowledge_anomaly
    from telemetry.models import Anomaly
    from tests.fixtures import T0, ingest_matrix, normal_pump_matrix

    with TestCase.captureOnCommitCallbacks(execute=True):
        create_skab_twin(["valve1/0.csv"], reset=False)
    settings.SIMULATION_SAMPLES = 2000
    matrix = normal_pump_matrix(500)
    matrix[450:, 3] += 0.5  # Pressure steps up
    ingest_matrix(pump, matrix)
    anomaly = Anomaly.objects.get(asset=pump)
    acknowledge_anomaly(anomaly.pk, actor=users["supervisor"], comment="looking at it")
    ingest_matrix(pump, normal_pump_matrix(300, seed=1), start=T0 + timedelta(seconds=500))
    anomaly.refresh_from_db()
    assert anomaly.status == "cleared"

    inputs = {"x": {"dist": "normal", "params": {"mean": 10.0, "std": 1.0}}}
    inline = served.response(_post(admin_client, "/sim/run", {"inputs": inputs,
                                                              "n_samples": 1000}),
                             "simulation.v1", 200)
    assert inline["status"] == "succeeded"
    settings.SIMULATION_SYNC_MAX_SECONDS = 0.0  # everything queues (no worker: stays queued)
    queued = [served.response(_post(admin_client, "/sim/run", {"inputs": inputs,
                                                               "n_samples": 5000}),
                              "simulation.v1", 202) for _ in range(2)]
    assert {q["status"] for q in queued} == {"queued"}
    cancelled = served.response(_post(admin_client, f"/sim/runs/{queued[0]['id']}/cancel"),
                                "simulation.v1", 200)
    assert cancelled["status"] == "cancelled"
    execute_run(queued[1]["id"])  # the worker's part: claimed (running), then finished
    failed = run_what_if(asset=_pump(pump, 9), action="hold", parameters={},
                         metrics=["Pressure"], at=T0)
    for run in [queued[1]["id"], failed.pk]:
        served.response(admin_client.get(f"/sim/runs/{run}"), "simulation.v1", 200)
    assert {s for name, s in served.seen if name == "simulation.v1"} == {
        "succeeded", "queued", "cancelled", "failed"}

    snapshot = admin_client.get("/snapshot").json()
    for key, name in [("twins", "twin.v1"), ("assets", "asset.v1"),
                      ("asset_states", "asset-state.v1"),
                      ("open_anomalies", "anomaly.v1"), ("proposals", "proposal.v1")]:
        for item in snapshot[key]:
            served.check(name, item, f"/snapshot {key}")
    events = served.feed(admin_client)
    states = {(e["resource_type"], e["data"].get("status")) for e in events}
    assert {("anomaly", "open"), ("anomaly", "acknowledged"), ("anomaly", "cleared"),
            ("simulation", "running"), ("simulation", "succeeded"), ("simulation", "queued"),
            ("simulation", "cancelled"), ("simulation", "failed")} <= states
    assert {"twin.created", "asset.created", "whatif_model.created", "proposal.created",
            "anomaly.created", "anomaly.updated"} <= {e["type"] for e in events}
