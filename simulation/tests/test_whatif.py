"""What-if models: fitting, re-fitting on a declared normal period (service and admin action),
the policy app's ``run_what_if`` contract, and keeping qiskit out of Django's start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest

from simulation import services
from simulation.engine import SimulationError
from simulation.errors import RunNotPermitted
from simulation.models import SimulationStatus, WhatIfModel
from tests.fixtures import T0, ingest_matrix, normal_pump_matrix
from twins.models import AuditEntry, ChangeEvent

pytestmark = pytest.mark.django_db
FLOW = "Volume Flow RateRMS"


@pytest.fixture
def two_operating_points(pump):
    """60 s at the normal 125 L/min, then 60 s at 140 L/min (another normal operating point)."""
    X = normal_pump_matrix(120)
    X[60:, 7] += 15.0
    ingest_matrix(pump, X)
    return pump


def test_refitting_on_a_declared_period_uses_only_its_readings(two_operating_points, users):
    pump = two_operating_points
    start, end = T0 + timedelta(seconds=60), T0 + timedelta(seconds=119)
    model = services.refit_whatif_model(pump, start=start, end=end, actor=users["admin"],
                                        reason="after the valve change")
    assert (model.n_rows, model.normal_from, model.normal_to) == (60, start, end)
    assert model.fit_report["drivers"][FLOW]["mean"] == pytest.approx(140.0, abs=0.5)
    low, high = model.bands[FLOW]
    assert low < 140.0 < high and low > 130.0
    entry = AuditEntry.objects.get(action="whatif_model.fit")
    assert (entry.actor, entry.reason, entry.before) == ("admin-user", "after the valve change",
                                                         None)
    assert entry.after["n_rows"] == 60


def test_a_refit_replaces_the_model_and_audits_the_before_state(two_operating_points):
    pump = two_operating_points
    services.fit_whatif_model(pump, rows=60)
    services.refit_whatif_model(pump, start=T0 + timedelta(seconds=60),
                                end=T0 + timedelta(seconds=119), actor="test")
    assert WhatIfModel.objects.count() == 1
    before, after = AuditEntry.objects.filter(action="whatif_model.fit").order_by("seq")
    assert after.before["fit_report"]["drivers"][FLOW]["mean"] == pytest.approx(125, abs=0.5)
    assert ChangeEvent.objects.filter(type="whatif_model.updated").count() == 1


@pytest.mark.parametrize(("start_s", "end_s", "message"), [
    (0, 5, "6 readings"), (50, 10, "must end after it starts")])
def test_a_bad_normal_period_is_rejected(two_operating_points, start_s, end_s, message):
    with pytest.raises(SimulationError, match=message):
        services.refit_whatif_model(two_operating_points, start=T0 + timedelta(seconds=start_s),
                                    end=T0 + timedelta(seconds=end_s), actor="test")


def test_refitting_needs_the_change_whatifmodel_permission(two_operating_points, users):
    with pytest.raises(RunNotPermitted):
        services.refit_whatif_model(two_operating_points, start=T0, end=T0 + timedelta(minutes=1),
                                    actor=users["supervisor"])


def test_the_admin_action_asks_for_the_period_and_then_refits(two_operating_points,
                                                              admin_client):
    model = services.fit_whatif_model(two_operating_points, rows=60)
    url = "/admin/simulation/whatifmodel/"
    chosen = {"action": "refit_on_normal_period", "_selected_action": [model.pk]}
    form = admin_client.post(url, chosen)
    assert form.status_code == 200 and b'name="apply"' in form.content
    done = admin_client.post(url, chosen | {"apply": "1", "start": "2024-01-01 00:01:00",
                                            "end": "2024-01-01 00:01:59", "reason": "valve"})
    assert done.status_code == 302
    model.refresh_from_db()
    assert model.n_rows == 60 and model.normal_from == T0 + timedelta(minutes=1)


def test_run_what_if_stores_one_finished_run_published_once(pump, settings):
    """The contract with policy.services: a finished run (request with state and constraints)
    and one simulation.created event; the first call fits the model."""
    settings.SIMULATION_FIT_ROWS = 100
    ingest_matrix(pump, normal_pump_matrix(120))
    run = services.run_what_if(asset=pump, action="reduce_load", parameters={"fraction": 0.1},
                               metrics=[FLOW], at=T0 + timedelta(seconds=119), seed=5,
                               n_samples=2000)
    assert run.status == SimulationStatus.SUCCEEDED and run.seed == 5
    assert set(run.request) >= {"action", "parameters", "metrics", "at", "state", "constraints",
                                "moved"}
    assert FLOW in run.request["moved"] and "Accelerometer1RMS" not in run.request["moved"]
    assert run.result["metrics"][FLOW]["p50"] == pytest.approx(0.9 * 125, abs=1.0)
    assert 0.0 < services.breach_probability(run) <= 1.0
    events = ChangeEvent.objects.filter(resource_type="simulation")
    assert [(e.type, e.data["status"]) for e in events] == [("simulation.created", "succeeded")]
    assert AuditEntry.objects.filter(action="whatif_model.fit").count() == 1


def test_run_what_if_without_enough_telemetry_stores_a_failed_run(pump):
    run = services.run_what_if(asset=pump, action="hold", parameters={}, metrics=[FLOW],
                               at=T0)
    assert run.status == SimulationStatus.FAILED and "needed to fit" in run.error
    assert services.breach_probability(run) == 1.0


def test_starting_django_and_loading_every_url_does_not_import_qiskit():
    code = ("import sys, django; django.setup(); from django.urls import resolve; resolve('/'); "
            "import opstwin_site.celery, simulation.services, simulation.tasks, policy.services; "
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('qiskit')))")
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "opstwin_site.settings",
                        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/unused"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_fit_bands_are_three_standard_deviations_around_the_training_mean(pump):
    X = normal_pump_matrix(60)
    ingest_matrix(pump, X)
    model = services.fit_whatif_model(pump, rows=60)
    flow = X[:, 7]
    assert model.bands[FLOW] == pytest.approx([flow.mean() - 3 * flow.std(),
                                               flow.mean() + 3 * flow.std()])
    assert np.isfinite(model.fit_report["metrics"]["Pressure"]["r2"])
