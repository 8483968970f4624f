"""The action catalogue: one definition, served per asset kind and per twin, and the check that
keeps proposals inside it (issue 13 item 2)."""

from __future__ import annotations

import json

import pytest

from policy.actions import CATALOGUE
from policy.catalogue import action_errors, catalogue_document, parameter_errors
from policy.models import Proposal
from policy.tests import factories
from simulation.models import SimulationRun
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"
GUARD = {"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95,
         "max_age_s": 60, "guards": ["reduce_load"]}


def _propose(client, action: str = "reduce_load", **parameters):
    body = {"twin": "plant", "asset": "pump-1", "action": action, "parameters": parameters}
    return client.post("/proposals", json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("value", [1e16, True, None, "1", [], {}, 0, -0.1, 1.0000001])
def test_an_out_of_schema_fraction_is_a_400_problem_naming_the_field(agent_client, pump, value):
    response = _propose(agent_client, fraction=value)
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == PROBLEM
    assert list(response.json()["errors"]) == ["parameters"]
    assert list(response.json()["errors"]["parameters"]) == ["fraction"]
    assert not Proposal.objects.exists() and not SimulationRun.objects.exists()


def test_a_missing_or_unknown_parameter_is_named(agent_client, pump):
    assert _propose(agent_client).json()["errors"] == {
        "parameters": {"fraction": ["this parameter is required"]}}
    errors = _propose(agent_client, fraction=0.1, speed=3).json()["errors"]
    assert errors == {"parameters": {"speed": ["not a parameter of this action"]}}
    errors = _propose(agent_client, "hold", fraction=0.1).json()["errors"]
    assert errors == {"parameters": {"fraction": ["not a parameter of this action"]}}


@pytest.mark.parametrize("number", ["NaN", "1e999"])
def test_non_finite_parameters_are_refused(number):
    value = float(number.replace("1e999", "inf"))
    assert parameter_errors("reduce_load", {"fraction": value}) != {}
    assert "fraction" in parameter_errors("reduce_load", {"fraction": value})


def test_parameters_that_are_not_an_object_are_refused():
    assert parameter_errors("reduce_load", [0.1]) == {
        "non_field_errors": ["[0.1] is not of type 'object'"]}
    assert parameter_errors("reduce_load", {"fraction": 0.25}) == {}
    assert parameter_errors("open_valve", {"fraction": 1}) == {}


@pytest.mark.parametrize(("action", "kind", "says"), [
    ("self_destruct", "pump", "not in the action catalogue for pump assets"),
    ("disable_interlock", "pump", "not in the action catalogue for pump assets"),
    ("open_valve", "motor", "not in the action catalogue for motor assets"),
    ("open_valve", "generic", "not in the action catalogue for generic assets"),
    ("restore_load", "pump", "is a rollback action"),
])
def test_actions_outside_the_kinds_catalogue_are_refused(action, kind, says):
    [message] = action_errors(kind, action)
    assert says in message


def test_an_unknown_action_is_a_400_problem_naming_the_action(agent_client, pump):
    response = _propose(agent_client, "self_destruct")
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert list(response.json()["errors"]) == ["action"]
    assert "one of ['emergency_stop', 'hold', 'open_valve', 'reduce_load']" in \
        response.json()["errors"]["action"][0]


def test_a_caller_who_may_not_propose_gets_403_whatever_the_body(viewer_client, pump):
    assert _propose(viewer_client, fraction="nonsense").status_code == 403


def test_every_action_has_a_parameter_schema_with_units_and_bounds():
    for name, spec in CATALOGUE.items():
        assert spec.parameters["type"] == "object", name
        for field, schema in spec.parameters.get("properties", {}).items():
            assert schema["unit"] == "1" and schema["maximum"] == 1, (name, field)
            assert schema["exclusiveMinimum"] == 0, (name, field)
        if spec.rollback:
            assert CATALOGUE[spec.rollback].kinds >= spec.kinds, name


def test_a_twins_catalogue_follows_its_active_policy(pump, signing_key, settings):
    """GIVEN a signed policy raising reduce_load to HIGH, forbidding open_valve and guarding
    reduce_load with an interlock, THEN the twin's catalogue says so, and the catalogue's
    defaults per kind do not change."""
    factories.signed_policy(pump.twin, signing_key, interlocks=[GUARD],
                            actions={"reduce_load": {"risk": "HIGH", "rollback": "hold"}},
                            forbidden=["open_valve"])
    Asset.objects.create(twin=pump.twin, slug="valve-1", name="Valve", kind="valve")
    document = catalogue_document(Twin.objects.all())
    plant = document["twins"]["plant"]
    assert plant["policy"]["trusted"] is True and plant["policy"]["version"] == 1
    assert sorted(plant["kinds"]) == ["pump", "valve"]
    assert plant["kinds"]["valve"]["assets"] == ["valve-1"]
    actions = {a["name"]: a for a in plant["kinds"]["pump"]["actions"]}
    assert actions["reduce_load"]["risk_level"] == "HIGH"
    assert actions["reduce_load"]["rollback"] == "hold"
    assert actions["reduce_load"]["interlocks"] == [
        {k: v for k, v in GUARD.items() if k != "guards"}]
    assert actions["emergency_stop"]["interlocks"] == []
    assert actions["open_valve"]["forbidden"] is True
    assert "open_valve" in plant["forbidden"]
    defaults = {a["name"]: a for a in document["kinds"]["pump"]}
    assert defaults["reduce_load"]["risk_level"] == "MEDIUM"
    assert defaults["reduce_load"]["rollback"] == "restore_load"
    assert "interlocks" not in defaults["reduce_load"]
    assert [a["name"] for a in document["kinds"]["generic"]] == [
        "reduce_load", "hold", "emergency_stop", "restore_load"]
    assert [a["name"] for a in document["kinds"]["valve"]] == [
        "open_valve", "hold", "restore_valve"]


@pytest.mark.parametrize("role", ["agent", "viewer"])
def test_get_actions_serves_the_callers_twins_only(client_of, pump, role):
    Twin.objects.create(slug="elsewhere", name="Not granted")
    body = client_of(role).get("/actions").json()
    assert sorted(body["twins"]) == ["plant"]
    assert sorted(body["kinds"]) == ["generic", "motor", "pump", "valve"]


@pytest.fixture
def client_of(users, django_user_model):
    """A logged-in client of ``role`` whose twin grants cover only 'plant'."""
    from django.test import Client

    from twins.roles import grant_twin

    def make(role: str) -> Client:
        user = users[role]
        user.user_permissions.clear()
        grant_twin(Twin.objects.get(slug="plant"), to=user, role=role)
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.mark.parametrize("kind", ["pump", "valve", "motor", "generic"])
@pytest.mark.parametrize(("metric", "severity", "value"), [
    ("Volume Flow RateRMS", "high", 100.0), ("Accelerometer1RMS", "critical", 1.0),
    ("Temperature", "critical", 99.0), ("Temperature", "high", 99.0), ("value", "high", 1.0),
])
def test_what_opstwin_proposes_by_itself_is_in_the_kinds_catalogue(metric, severity, value,
                                                                   kind):
    from policy.actions import candidate_action

    action, parameters = candidate_action(metric, severity, value, baseline=120.0, kind=kind)
    assert action_errors(kind, action) == []
    assert parameter_errors(action, parameters) == {}


def test_the_openapi_proposal_body_carries_the_catalogue(client):
    document = client.get("/api/schema/", {"format": "json"}).json()
    schemas = document["components"]["schemas"]
    body = schemas["ActionRequest"]
    [enum] = body["properties"]["action"]["allOf"]
    assert schemas[enum["$ref"].rsplit("/", 1)[1]]["enum"] == [
        "open_valve", "reduce_load", "hold", "emergency_stop"]
    branches = {b["title"]: b for b in body["oneOf"]}
    assert branches["reduce_load"]["properties"]["action"]["pattern"] == "^reduce_load$"
    fraction = branches["reduce_load"]["properties"]["parameters"]["properties"]["fraction"]
    assert (fraction["minimum"], fraction["exclusiveMinimum"], fraction["maximum"]) == (
        0, True, 1)
    assert fraction["x-unit"] == "1" and branches["reduce_load"]["required"] == ["parameters"]
    assert branches["hold"]["properties"]["parameters"]["additionalProperties"] is False


def test_an_asset_type_narrows_the_catalogue_and_sets_risk(agent_client, pump):
    """GIVEN the pump's type offering only reduce_load, at HIGH risk
    WHEN the catalogue is read and open_valve is proposed
    THEN the twin's ``types`` lists reduce_load (HIGH) and its rollback only, the kind's list
    is unchanged, and open_valve is a 400 naming the type."""
    from twins.models import AssetType
    from twins.services import save_asset_type

    pump_type = AssetType.objects.get(slug="pump")
    pump.asset_type = pump_type
    pump.save()
    pump_type.actions = [{"action": "reduce_load", "risk_level": "HIGH"}]
    save_asset_type(pump_type, actor="test")
    twin = catalogue_document(Twin.objects.all())["twins"]["plant"]
    offered = {a["name"]: a["risk_level"] for a in twin["types"]["pump"]["actions"]}
    assert offered == {"reduce_load": "HIGH", "restore_load": "MEDIUM"}
    assert twin["types"]["pump"]["assets"] == ["pump-1"]
    assert "open_valve" in {a["name"] for a in twin["kinds"]["pump"]["actions"]}
    response = _propose(agent_client, "open_valve", fraction=0.5)
    assert response.status_code == 400
    assert "not offered on asset type pump" in response.json()["errors"]["action"][0]


def test_an_asset_type_declares_an_actions_effect_on_metrics(pump):
    """GIVEN a generic type declaring that reduce_load lowers only Power
    WHEN it is saved and read from the catalogue, and a malformed effect is saved
    THEN the catalogue shows the declared effect and the bad one is a 400 naming it."""
    from twins.models import AssetType
    from twins.services import InvalidTwinModel, save_asset_type

    effect = {"effects": [{"metrics": ["Power"], "mode": "scale", "direction": -1,
                           "amount": {"parameter": "fraction"}}]}
    meter = AssetType(slug="meter", name="Meter", base_kind="generic",
                      actions=[{"action": "reduce_load", "effect": effect}])
    save_asset_type(meter, actor="test")
    asset = Asset.objects.create(twin=pump.twin, slug="meter-1", name="M", kind="generic",
                                 asset_type=meter)
    twin = catalogue_document(Twin.objects.all())["twins"]["plant"]
    assert [a["effect"] for a in twin["types"]["meter"]["actions"]
            if a["name"] == "reduce_load"] == [effect]
    meter.actions = [{"action": "reduce_load", "effect": {"effects": [{"mode": "explode"}]}}]
    with pytest.raises(InvalidTwinModel) as refused:
        save_asset_type(meter, actor="test")
    assert "'reduce_load' effect" in refused.value.errors["actions"][0]
    assert AssetType.objects.get(pk=asset.asset_type_id).actions[0]["effect"] == effect
