"""Every AIW schema is valid JSON Schema 2020-12, and real objects built through the services
validate against it, so a serializer that drifts from its published schema fails here.

When a serializer grows a field on purpose, add it to ``twins/schemas/<name>.json`` (and bump
the schema's version if the change is breaking for agents).
"""

from __future__ import annotations

import uuid

import pytest
from django.test import TestCase
from jsonschema import Draft202012Validator

from aiw.api.serializers import ChangeEventSerializer
from aiw.tests.conftest import touch
from tests.fixtures import T0, event, ingest_matrix, normal_pump_matrix
from twins.models import ChangeEvent
from twins.schemas import RESOURCE_SCHEMAS, errors, load_schema, schema_names

pytestmark = pytest.mark.django_db
PRESSURE = 3
EXPECTED = {"telemetry.v1", "anomaly.v1", "simulation.v1", "proposal.v1", "decision.v1",
            "action.v1", "audit.v1", "twin.v1", "asset.v1", "change-event.v1",
            "stream-control.v1", "whatif-model.v1", "policy.v1", "problem.v1",
            "action-catalogue.v1", "detector-config.v1", "agent-token.v1", "asset-type.v1",
            "asset-state.v1", "simulation-progress.v1", "notification-subscription.v1"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_schema_is_a_valid_2020_12_schema_with_a_matching_id(name):
    document = load_schema(name)
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == name  # served as the absolute URL (test_contract_schemas)
    assert document["title"] == name


def test_every_promised_schema_is_served():
    assert set(schema_names()) == EXPECTED
    assert set(RESOURCE_SCHEMAS.values()) <= EXPECTED


def test_a_schema_rejects_what_it_should():
    twin = {"id": 1, "slug": "plant", "name": "P", "description": "", "revision": 1,
            "created_at": "nope", "updated_at": "2024-01-01T00:00:00Z"}
    assert errors("twin.v1", twin) == ["created_at: 'nope' is not a 'date-time'"]
    assert errors("twin.v1", twin | {"created_at": "2024-01-01T00:00:00Z", "extra": 1})
    change = {"cursor": "x", "id": 1, "type": "twin.updated", "resource_type": "twin",
              "resource_id": "1", "operation": "updated", "twin": "plant", "actor": "a",
              "at": "2024-01-01T00:00:00Z", "data": {"id": 1}}
    assert any(e.startswith("data:") for e in errors("change-event.v1", change))


def _loop(pump, settings) -> None:
    """Telemetry with a pressure step through ingest → detection → response (simulation,
    policy decision, proposal), every service as in production."""
    settings.SIMULATION_SAMPLES = 2000
    matrix = normal_pump_matrix(500)
    matrix[450:, PRESSURE] += 0.5
    ingest_matrix(pump, matrix)


@pytest.fixture
def loop_events(pump, settings, twin) -> list[ChangeEvent]:
    from demo.provision import create_skab_twin

    with TestCase.captureOnCommitCallbacks(execute=True):
        create_skab_twin(["valve1/0.csv"], reset=False)
    touch(twin)
    _loop(pump, settings)
    return list(ChangeEvent.objects.select_related("twin"))


def test_every_event_type_of_a_real_loop_validates_against_its_schema(loop_events):
    """GIVEN twins and assets created, telemetry ingested and a fault detected and answered,
    THEN every change event on the feed is valid change-event.v1 and its data valid against
    its resource's schema, for every resource type."""
    types = {e.resource_type for e in loop_events}
    assert {"twin", "asset", "anomaly", "simulation", "proposal"} <= types, types
    assert types <= set(RESOURCE_SCHEMAS), f"no schema for {types - set(RESOURCE_SCHEMAS)}"
    for item in ChangeEventSerializer(loop_events, many=True).data:
        schema = RESOURCE_SCHEMAS[item["resource_type"]]
        where = f"{item['type']} by {item['actor']}: data must be {schema}"
        assert errors(schema, item["data"]) == [], where
        assert errors("change-event.v1", item) == [], where


def test_current_serializer_output_validates_against_each_resource_schema(loop_events, pump):
    from policy.api.serializers import AuditEntrySerializer, ProposalSerializer
    from policy.models import Proposal
    from simulation.api.serializers import SimulationRunSerializer
    from simulation.models import SimulationRun
    from telemetry.api.serializers import AnomalySerializer
    from telemetry.models import Anomaly
    from twins.api.serializers import AssetSerializer, TwinSerializer
    from twins.models import AuditEntry

    cases = [
        ("twin.v1", TwinSerializer(pump.twin).data),
        ("asset.v1", AssetSerializer(pump).data),
        *[("anomaly.v1", AnomalySerializer(a).data) for a in Anomaly.objects.all()],
        *[("simulation.v1", SimulationRunSerializer(s).data)
          for s in SimulationRun.objects.all()],
        *[("proposal.v1", ProposalSerializer(p).data) for p in Proposal.objects.all()],
        *[("decision.v1", p.decision_trace) for p in Proposal.objects.all()],
        *[("audit.v1", AuditEntrySerializer(a).data) for a in AuditEntry.objects.all()],
    ]
    assert {name for name, _ in cases} == {"twin.v1", "asset.v1", "anomaly.v1",
                                           "simulation.v1", "proposal.v1", "decision.v1",
                                           "audit.v1"}
    for name, document in cases:
        assert errors(name, document) == [], name


def test_a_telemetry_event_as_sensors_send_it_validates(pump):
    document = event(pump, T0, {"Pressure": 1.2, "Temperature": 89.1}, quality="good")
    assert errors("telemetry.v1", document) == []
    assert errors("telemetry.v1", document | {"event_id": "not-a-uuid"})


def test_a_command_outcome_validates_as_action_v1(mqtt_url, settings, twin, pump):
    """GIVEN a simulated device on the real broker, WHEN a command is sent the way an
    execution sends it, THEN the recorded outcome is valid action.v1."""
    from demo.device import SimulatedDevice
    from policy.command_publisher import send_command

    settings.MQTT_TOPIC_PREFIX = f"t{uuid.uuid4().hex[:8]}"
    device = SimulatedDevice(mqtt_url, twin.slug).start()
    try:
        outcome = send_command(twin_slug=twin.slug, asset_slug=pump.slug, command_id="c-1",
                               action="reduce_load", parameters={"fraction": 0.1})
    finally:
        device.stop()
    assert outcome["acknowledged"] is True
    assert errors("action.v1", outcome) == []


def test_diff_and_snapshot_responses_validate(loop_events, admin_client):
    page = admin_client.get("/diff", {"limit": 1000}).json()
    invalid = [(e["type"], e["actor"], errors("change-event.v1", e)[:2]) for e in page["events"]
               if errors("change-event.v1", e)]
    assert page["events"] and invalid == []
    snapshot = admin_client.get("/snapshot").json()
    for key, name in [("twins", "twin.v1"), ("assets", "asset.v1"),
                      ("asset_states", "asset-state.v1"),
                      ("open_anomalies", "anomaly.v1"), ("proposals", "proposal.v1")]:
        assert all(errors(name, item) == [] for item in snapshot[key]), key
    assert snapshot["twins"] and snapshot["assets"] and snapshot["asset_states"]

