"""Interlocks fail closed and guard only the actions they name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from policy import interlocks
from policy.choices import Decision
from policy.services import propose
from policy.tests import factories
from twins.models import Asset

pytestmark = pytest.mark.django_db
TEMP = {"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95, "max_age_s": 60,
        "guards": ["reduce_load"]}


def check(on, **changes):
    return interlocks.check(TEMP | changes, asset=on, now=timezone.now())


def test_a_satisfied_interlock_passes(pump):
    factories.reading(pump, {"Temperature": 89.0})
    result = check(pump)
    assert result.passed is True
    assert result.observed == 89.0


def test_a_violated_interlock_denies(pump):
    factories.reading(pump, {"Temperature": 97.0})
    assert check(pump).passed is False


@pytest.mark.parametrize("op", ["==", "=<", "lt", None, "!="])
def test_an_unknown_operator_denies(pump, op):
    factories.reading(pump, {"Temperature": 89.0})
    result = check(pump, op=op)
    assert result.passed is False
    assert "unknown operator" in result.detail


@pytest.mark.parametrize("value", ["95", None, float("nan"), float("inf"), True, [95]])
def test_a_non_numeric_limit_denies(pump, value):
    factories.reading(pump, {"Temperature": 89.0})
    result = check(pump, value=value)
    assert result.passed is False
    assert "not a finite number" in result.detail


def test_a_missing_reading_denies(pump):
    factories.reading(pump, {"Pressure": 1.0})
    result = check(pump)
    assert result.passed is False
    assert "no reading of Temperature" in result.detail


def test_a_stale_reading_denies(pump):
    old = timezone.now() - timedelta(seconds=61)
    factories.reading(pump, {"Temperature": 89.0}, ts=old, received_at=old)
    result = check(pump)
    assert result.passed is False
    assert "stale" in result.detail


def test_a_metric_lagging_the_rest_of_the_asset_denies(pump):
    now = timezone.now()
    factories.reading(pump, {"Temperature": 89.0}, ts=now - timedelta(seconds=120))
    factories.reading(pump, {"Pressure": 1.0}, ts=now)  # temperature sensor went quiet
    result = check(pump)
    assert result.passed is False
    assert "120 s behind" in result.detail


@pytest.mark.parametrize("max_age", ["60", 0, -5, None])
def test_a_bad_freshness_limit_denies(pump, max_age):
    factories.reading(pump, {"Temperature": 89.0})
    assert check(pump, max_age_s=max_age).passed is False


def test_an_interlock_on_an_unknown_asset_denies(pump):
    factories.reading(pump, {"Temperature": 89.0})
    assert "unknown asset" in check(pump, asset="nope").detail


def test_an_interlock_may_read_another_asset_of_the_twin(pump):
    tank = Asset.objects.create(twin=pump.twin, slug="tank", name="Tank")
    factories.reading(pump, {"Temperature": 89.0})
    factories.reading(tank, {"Temperature": 99.0})
    assert check(pump, asset="tank").observed == 99.0


def test_an_interlock_guards_only_the_actions_it_lists():
    assert interlocks.guards(TEMP, "reduce_load") is True
    assert interlocks.guards(TEMP, "emergency_stop") is False
    assert interlocks.guards(TEMP | {"guards": "reduce_load"}, "emergency_stop") is True
    assert interlocks.guards(TEMP | {"guards": None}, "emergency_stop") is True
    assert interlocks.guards("not an object", "emergency_stop") is True


def test_an_emergency_stop_is_not_blocked_by_a_temperature_interlock(pump, signing_key):
    """GIVEN an overheated pump and an interlock on load changes, WHEN OpsTwin proposes
    reduce_load and emergency_stop, THEN only reduce_load is rejected by the interlock."""
    factories.reading(pump, {"Temperature": 99.0, "Volume Flow RateRMS": 125.0})
    factories.signed_policy(pump.twin, signing_key, interlocks=[TEMP])
    run = factories.simulation(pump)
    blocked = propose(asset=pump, action="reduce_load", parameters={}, simulation=run)
    stop = propose(asset=pump, action="emergency_stop", parameters={}, simulation=run)
    assert blocked.decision == Decision.REJECT
    assert blocked.decision_trace[-1]["check"] == "interlocks"
    assert stop.decision != Decision.REJECT
    interlock_step = next(s for s in stop.decision_trace if s["check"] == "interlocks")
    assert interlock_step == {"check": "interlocks", "passed": True, "results": [],
                              "detail": "no interlock guards this action"}
