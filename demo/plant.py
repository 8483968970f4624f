"""The demo's plant simulator: telemetry that answers back to the commands the device applies.

The replay (``demo.replay``) publishes what the SKAB or NAB recording did; the recording
cannot react to a command. ``Plant`` sits between the recording and the broker: every event
passes through ``Plant.sense`` before it is published. While an asset has an *active
response*, each metric the response moves is replaced by a draw of the asset's what-if model
for the commanded action, every other metric stays as recorded.

The model is the one the simulation used for the proposal: the command id names the proposal
(``proposal-<pk>``), and ``simulation.services.run_action_model`` rebuilds that proposal's
run (the asset's stored what-if model, the run's calibrated state, action, parameters and
declared effect). A command no proposal sent (a script, a test) is modelled afresh on the
asset's telemetry up to its newest reading (``simulation.services.action_model``). Each
published reading is one joint draw of the model's inputs (driver levels, the declared
effect's gain, the fit's residual noise) pushed through the model, so the readings have the
distribution whose p5-p95 band the proposal's verification checks them against. Which
metrics move is the model's own statement (``PumpModel.moved_metrics``,
``GenericModel.moved_metrics``): the pump's drivers and the metrics fitted on them, a generic
asset's metrics named by the action's declared effect; ``hold`` and the rollback-only actions
move none.

A response lasts until the next command to the asset: a rollback-only action (``restore_*``,
``proposable=False`` in ``policy.actions.CATALOGUE``) or ``hold`` ends it and the recording
shows again; another action replaces it.

Faults (``FaultPlan``, ``manage.py demo --fault``) make the plant misbehave on chosen commands
while still acknowledging them ``ok``, so the verification breach and the rollback still show:
``ignored`` (no effect: the asset carries on as before the command) or ``wrong-way`` (the
model's effect with the opposite sign: each reading is ``2 h - a`` with ``a`` the action's
outcome and ``h`` the outcome of ``hold`` on the same draw, clipped at 0 where the model clips).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy.actions import CATALOGUE
from policy.models import Proposal
from policy.state import newest_event_ts
from simulation.engine import SimulationError
from simulation.services import ActionModel, action_model, run_action_model
from twins.models import Asset

log = logging.getLogger(__name__)

IGNORED, WRONG_WAY = "ignored", "wrong-way"
FAULT_MODES = ("none", "ignore", "wrong-way", "mixed")
DEFAULT_FAULT = "mixed:3"
BATCH = 256  # draws per refill of a response's buffer
_SPEC = re.compile(r"^(?P<mode>[a-z-]+)(?::(?P<every>\d+))?$")


@dataclass
class FaultPlan:
    """Which commands the plant gets wrong: the ``every``-th, 2 ``every``-th, ... command with
    a modelled effect (counted from 1 in order of arrival; rollbacks, ``hold``, duplicates and
    rejected commands are not counted). ``mode``: ``none``, ``ignore`` (every chosen command
    is ignored), ``wrong-way`` or ``mixed`` (the chosen commands alternate: wrong-way first,
    then ignored). Thread-safe. Build from text with :meth:`parse`."""

    mode: str = "none"
    every: int = 1
    counted: int = 0
    faulted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """``MODE[:EVERY]``, e.g. ``none``, ``ignore`` (every command), ``wrong-way:3``,
        ``mixed:4``. Raises ValueError on another mode or an ``EVERY`` below 1."""
        match = _SPEC.match((spec or "none").strip().lower())
        if match is None or match["mode"] not in FAULT_MODES:
            raise ValueError(f"fault {spec!r}: expected MODE[:EVERY] with MODE one of "
                             f"{', '.join(FAULT_MODES)} (e.g. mixed:4)")
        every = int(match["every"] or 1)
        if every < 1:
            raise ValueError(f"fault {spec!r}: EVERY must be 1 or more")
        return cls(match["mode"], every)

    def describe(self) -> str:
        """One line for the demo's output, e.g. ``every 4th command with an effect: ignored
        and wrong-way in turn``."""
        if self.mode == "none":
            return "none: the plant follows every command"
        which = "every command" if self.every == 1 else f"every {_ordinal(self.every)} command"
        how = {"ignore": IGNORED, "wrong-way": WRONG_WAY,
               "mixed": f"{WRONG_WAY} and {IGNORED} in turn"}[self.mode]
        return f"{which} with an effect: {how} (acknowledged ok all the same)"

    def next(self) -> str | None:
        """Count one command with an effect; its fault (``ignored``/``wrong-way``) or None."""
        with self._lock:
            self.counted += 1
            if self.mode == "none" or self.counted % self.every:
                return None
            self.faulted += 1
            if self.mode == "mixed":
                return WRONG_WAY if self.faulted % 2 else IGNORED
            return IGNORED if self.mode == "ignore" else WRONG_WAY


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass
class Response:
    """An asset's active response to one command: ``model`` (the action's what-if),
    ``fault`` (None or ``wrong-way``) and a buffer of pre-drawn readings per moved metric."""

    command_id: str
    model: ActionModel
    fault: str | None
    rng: np.random.Generator
    buffer: dict[str, np.ndarray] = field(default_factory=dict)
    used: int = BATCH

    def reading(self) -> dict[str, float]:
        """The next reading of every moved metric (metric units)."""
        if self.used >= BATCH:
            outcome, hold = self.model.draw(BATCH, self.rng)
            self.buffer = {}
            for metric in self.model.moved:
                values = np.asarray(outcome[metric], dtype=float)
                if self.fault == WRONG_WAY:
                    values = 2.0 * np.asarray(hold[metric], dtype=float) - values
                    if metric in self.model.floors:
                        values = np.maximum(values, 0.0)
                self.buffer[metric] = values
            self.used = 0
        k, self.used = self.used, self.used + 1
        return {m: float(v[k]) for m, v in self.buffer.items()}


class Plant:
    """Every asset's response to the commands the device acknowledged ``ok``.

    ``fault``: a :class:`FaultPlan` or its text (``FaultPlan.parse``); ``seed``: the draws'
    seed, >= 0 (each command's draws come from ``(seed, command id)``: a rerun with the same
    commands publishes the same readings). ``records``: command id -> what the plant did
    (``{"command_id", "twin", "asset", "action", "parameters", "effect": "applied" |
    "ended" | "none", "fault", "moved", "model", "simulation", "detail", "effective_from"}``;
    ``effective_from`` is the ``ts`` of the asset's last event sensed before the command took
    hold, so every reading after it is the plant's answer), for the demo's summary and the
    device's ack; ``answered``: ``(twin, asset)`` -> the ``ts`` of every event whose readings the
    plant replaced. Thread-safe: the device's network thread commands, the replay's thread
    senses. Raises ValueError for a bad fault text or seed.
    """

    def __init__(self, fault: FaultPlan | str | None = None, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"the plant's seed must be an int >= 0, got {seed!r}")
        self.faults = fault if isinstance(fault, FaultPlan) else FaultPlan.parse(fault)
        self.seed = seed
        self.records: dict[str, dict[str, Any]] = {}
        self.answered: dict[tuple[str, str], set[str]] = {}
        self._active: dict[tuple[str, str], Response] = {}
        self._sensed: dict[tuple[str, str], str] = {}  # (twin, asset) -> last sensed ts
        self._lock = threading.Lock()

    def command(self, twin_slug: str, asset_slug: str, command: dict) -> dict[str, Any]:
        """Apply one acknowledged (``ok``, first delivery) command to the asset; returns and
        keeps its record. Never raises: a command the plant cannot model is recorded with
        ``effect`` ``none`` and the reason in ``detail``."""
        action, parameters = command.get("action"), command.get("parameters") or {}
        record = {"command_id": command["command_id"], "twin": twin_slug, "asset": asset_slug,
                  "action": action, "parameters": parameters, "effect": "none", "fault": None,
                  "moved": [], "model": None, "simulation": None, "detail": ""}
        key = (twin_slug, asset_slug)
        spec = CATALOGUE.get(action)
        if action == "hold" or (spec is not None and not spec.proposable):
            with self._lock:
                ended = self._active.pop(key, None)
            record |= {"effect": "ended",
                       "detail": f"ended {ended.command_id}" if ended else "nothing to end"}
            return self._keep(record)
        try:
            model = self._model(twin_slug, asset_slug, command)
        except (SimulationError, Asset.DoesNotExist) as exc:
            record["detail"] = f"no what-if model: {exc}"
            return self._keep(record)
        record |= {"model": model.kind, "simulation": model.simulation_id,
                   "moved": list(model.moved)}
        if not model.moved:
            record["detail"] = f"{action} has no modelled effect on any metric"
            return self._keep(record)
        fault = self.faults.next()
        record["fault"] = fault
        if fault == IGNORED:
            record["detail"] = "fault injected: ignored (acknowledged, no effect)"
            return self._keep(record)
        rng = np.random.default_rng([self.seed, *command["command_id"].encode()])
        with self._lock:  # the boundary: events sensed from now on carry the response
            self._active[key] = Response(command["command_id"], model, fault, rng)
            record["effective_from"] = self._sensed.get(key)
        record |= {"effect": "applied",
                   "detail": "fault injected: wrong-way (the model's effect reversed)"
                   if fault == WRONG_WAY else "the plant follows the what-if model"}
        return self._keep(record)

    def _keep(self, record: dict[str, Any]) -> dict[str, Any]:
        key = (record["twin"], record["asset"])
        with self._lock:
            record.setdefault("effective_from", self._sensed.get(key))
            self.records[record["command_id"]] = record
        log.info("plant %s/%s %s: %s %s", record["twin"], record["asset"],
                 record["command_id"], record["effect"], record["detail"])
        return record

    @staticmethod
    def _model(twin_slug: str, asset_slug: str, command: dict) -> ActionModel:
        """The proposal's own what-if when a proposal sent the command, else one calibrated
        now on the asset's telemetry."""
        proposal = (Proposal.objects.filter(execution__command_id=command["command_id"])
                    .select_related("simulation").first())
        if proposal is not None and proposal.simulation is not None:
            return run_action_model(proposal.simulation)
        asset = Asset.objects.get(twin__slug=twin_slug, slug=asset_slug)
        at = newest_event_ts(asset)
        if at is None:
            raise SimulationError(f"{asset_slug} has no telemetry to calibrate on")
        return action_model(asset, command["action"], command.get("parameters"), at=at)

    def active(self, twin_slug: str, asset_slug: str) -> str | None:
        """The command id the asset is responding to, or None (it replays as recorded)."""
        with self._lock:
            response = self._active.get((twin_slug, asset_slug))
        return response.command_id if response else None

    def sense(self, event: dict) -> dict:
        """A telemetry.v1 event as the plant's sensors read it: the recording's event, or,
        while its asset responds to a command, a copy whose moved metrics are the model's
        reading and whose tags name the command (``"plant": "proposal-7 reduce_load"``)."""
        key = (event.get("twin_id"), event.get("asset_id"))
        with self._lock:
            self._sensed[key] = event["ts"]
            response = self._active.get(key)
            reading = response.reading() if response else None
            if reading and set(reading) & set(event["metrics"]):
                self.answered.setdefault(key, set()).add(event["ts"])
        if not reading:
            return event
        metrics = dict(event["metrics"])
        metrics.update({m: v for m, v in reading.items() if m in metrics})
        label = f"{response.command_id} {response.model.action}"
        if response.fault:
            label += f" ({response.fault})"
        return event | {"metrics": metrics, "tags": {**event.get("tags", {}), "plant": label}}
