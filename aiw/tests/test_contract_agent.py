"""The manifest-only agent flow (issue 13, "Done when"): an agent that knows nothing but
``/.well-known/aiw-manifest.json`` and its bearer token discovers the action catalogue,
proposes an action from it with parameters valid against the catalogue's schema, and follows
the proposal's outcome on the change feed, using only URLs the manifest gives."""

from __future__ import annotations

import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.test import Client
from jsonschema import Draft202012Validator

from aiw.tests.conftest import bearer
from aiw.tests.test_contract_states import Served
from demo.device import SimulatedDevice
from policy import services
from policy.signing import public_key_b64
from policy.tests import factories
from tests.fixtures import ingest_matrix, normal_pump_matrix

pytestmark = pytest.mark.django_db
MANIFEST = "/.well-known/aiw-manifest.json"


@pytest.fixture
def running_plant(pump, settings, tmp_path, mqtt_url):
    """A pump with 400 s of normal telemetry, a signed policy that asks people to approve
    every action (auto-execution threshold 1.0), and a simulated device acking commands."""
    key = Ed25519PrivateKey.generate()
    settings.POLICY_PUBLIC_KEYS = {"test": public_key_b64(key)}
    settings.POLICY_DEV_KEY_DIR = None
    settings.POLICY_AUDIT_ANCHOR_FILE = str(tmp_path / "anchors.jsonl")
    settings.POLICY_COMMAND_EFFECT_TIMEOUT = 3.0
    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    settings.SIMULATION_SAMPLES = 1000
    ingest_matrix(pump, normal_pump_matrix(400))
    factories.signed_policy(pump.twin, key, thresholds={"auto_execute": 1.0, "approval": 0.0})
    device = SimulatedDevice(mqtt_url, pump.twin.slug).start()
    yield device
    device.stop()


def valid_parameters(schema: dict) -> dict:
    """What a careful agent sends: each required parameter's first example (else the middle
    of its bounds), checked against the schema before sending."""
    parameters = {}
    for name in schema.get("required", []):
        spec = schema["properties"][name]
        low = spec.get("minimum", spec.get("exclusiveMinimum", 0.0))
        parameters[name] = (spec.get("examples") or [(low + spec["maximum"]) / 2])[0]
    Draft202012Validator(schema).validate(parameters)
    return parameters


def follow(agent: Client, diff_url: str, since: str, resource_id: str) -> tuple[list, str]:
    """The proposal's events on the feed after ``since`` (every page), and the next cursor."""
    events, has_more = [], True
    while has_more:
        page = agent.get(diff_url, {"since": since, "types": "proposal"}).json()
        events += [e for e in page["events"] if e["resource_id"] == resource_id]
        since, has_more = page["next_cursor"], page["has_more"]
    return events, since


def test_an_agent_that_knows_only_the_manifest_proposes_from_the_catalogue_and_follows_it(
        running_plant, users, agent_token):
    """GIVEN a running plant and an agent token,
    WHEN the agent reads the manifest, takes the pump's catalogue, proposes reduce_load with
    parameters built from its schema, and a supervisor and an executor do their part,
    THEN the proposal is accepted (201) as proposal.v1, and the agent sees it on the feed go
    pending_approval → approved → executing → executed → verifying, each event valid against
    the schemas the manifest links."""
    agent = Client(headers=bearer(agent_token))
    manifest = agent.get(MANIFEST).json()
    endpoints, catalogue = manifest["endpoints"], manifest["actions"]
    served = Served(agent, endpoints["schemas"])
    assert served.urls == manifest["schemas"]
    assert agent.get(catalogue["url"]).json()["twins"] == catalogue["twins"]

    plant = catalogue["twins"]["plant"]
    asset = plant["kinds"]["pump"]["assets"][0]
    offer = {a["name"]: a for a in plant["kinds"]["pump"]["actions"]
             if a["proposable"] and not a["forbidden"]}
    choice = offer["reduce_load"]
    assert choice["risk_level"] == "MEDIUM" and choice["rollback"] == "restore_load"
    parameters = valid_parameters(choice["parameters"])
    cursor = agent.get(endpoints["snapshot"]).json()["cursor"]

    response = agent.post(catalogue["propose"], json.dumps({
        "twin": "plant", "asset": asset, "action": "reduce_load", "parameters": parameters}),
        content_type="application/json")
    proposal = served.response(response, manifest["resources"]["proposal"], 201)
    assert proposal["parameters"] == parameters and proposal["status"] == "pending_approval"

    services.approve_proposal(proposal["id"], actor=users["supervisor"])
    services.execute_proposal(proposal["id"], actor=users["executor"])
    events, cursor = follow(agent, endpoints["diff"], cursor, str(proposal["id"]))
    for event in events:
        served.check("change-event.v1", event, event["type"])
    assert [e["data"]["status"] for e in events] == [
        "pending_approval", "approved", "executing", "executed", "verifying"]
    assert events[0]["type"] == "proposal.created" and events[0]["actor"] == "agent-user"
    assert events[-1]["data"]["execution"]["acknowledged"] is True
    assert follow(agent, endpoints["diff"], cursor, str(proposal["id"]))[0] == []
