"""Request bodies, users and runs for the simulation tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib.auth.models import Group

from simulation.models import SimulationRun, SimulationStatus
from twins.choices import Role
from twins.roles import grant_twin

NORMAL = {"dist": "normal", "params": {"mean": 10.0, "std": 1.0}}


def linear_request(**extra) -> dict:
    """A generic request: power = 0.5 flow + 2 head + 0.1, one constraint on power."""
    return {
        "inputs": {"flow": NORMAL, "head": {"dist": "uniform", "params": {"low": 1, "high": 2}}},
        "outputs": {"power": {"terms": {"flow": 0.5, "head": 2.0}, "intercept": 0.1}},
        "constraints": [{"metric": "power", "op": ">", "limit": 8.5}],
        "n_samples": 5000, "seed": 3,
    } | extra


def tail_request(**extra) -> dict:
    """P(x > 1) for x ~ N(0, 1) on the quantum engine, small (3 qubits, epsilon 0.05)."""
    return {
        "inputs": {"x": {"dist": "normal", "params": {"mean": 0.0, "std": 1.0}}},
        "constraints": [{"metric": "x", "op": ">", "limit": 1.0}],
        "engine": "quantum_iae", "num_qubits": 3, "epsilon": 0.05, "seed": 7,
    } | extra


def user_on_twin(django_user_model, name: str, role: str, twin, twin_role: str | None):
    """A user in ``role``'s group with ``twin_role``'s access to ``twin`` only (None: none)."""
    user = django_user_model.objects.create_user(username=name, password="pw")
    user.groups.add(Group.objects.get(name=role))
    if twin_role:
        grant_twin(twin, to=user, role=twin_role)
    return user


def stored_run(asset=None, *, created_by=None, status=SimulationStatus.QUEUED,
               **fields) -> SimulationRun:
    """A run row as the services store it (for read and cancel tests)."""
    fields = {"request": linear_request(), "engine_requested": "auto",
              "engine": "monte_carlo", "seed": 3} | fields
    return SimulationRun.objects.create(asset=asset, created_by=created_by, status=status,
                                        **fields)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` every 0.1 s until it holds or ``timeout`` passes; returns it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


ROLES = [str(r) for r in Role]
