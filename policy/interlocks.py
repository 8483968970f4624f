"""Interlocks: predicates on the twin's live state that must hold before an action may run.

An interlock (policy.v1 ``interlocks[]``)::

    {"id": "motor-temp", "metric": "Temperature", "op": "<", "value": 95,
     "max_age_s": 60, "guards": ["reduce_load", "open_valve"], "asset": "pump-2"}

reads "``reduce_load``/``open_valve`` may run only while the newest Temperature reading is
below 95 °C and at most 60 s old". ``asset`` (optional) names another asset of the same twin;
by default the proposal's own asset is read. An interlock guards only the actions it lists,
so an emergency stop is never blocked by an interlock written for load changes.

"The newest reading" is the one OpsTwin received last (``policy.state``): receipt time decides,
the sensor's timestamp only orders history. Ingest accepts readings dated up to 300 s ahead, so
a reading whose sensor time runs more than ``policy.state.MAX_CLOCK_SKEW_S`` (5 s) ahead of its
receipt never decides an interlock: it denies ("reading dated in the future"), and it cannot
shadow the readings received after it. Age is measured from receipt.

Fail-closed: an unknown ``op`` (only ``<``, ``<=``, ``>``, ``>=``; equality on floats is not a
safety predicate), a non-numeric or non-finite ``value`` or ``max_age_s``, a missing metric,
an unknown asset, no reading, a reading dated in the future, a stale reading (received more
than ``max_age_s`` ago, default ``DEFAULT_MAX_AGE_S``, or lagging the asset's newest event not
dated in the future by more than that, in sensor time) all deny. An interlock whose ``guards``
is not a list of action names guards every action.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from policy.state import MAX_CLOCK_SKEW_S, current_event_ts, latest_reading

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
DEFAULT_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class InterlockResult:
    """One interlock checked: ``passed`` and why (``observed`` value, ``age_s`` seconds)."""

    id: str
    passed: bool
    detail: str
    observed: float | None = None
    age_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def guards(interlock: Any, action: str) -> bool:
    """Whether ``interlock`` applies to ``action`` (malformed guards: it applies to all)."""
    listed = interlock.get("guards") if isinstance(interlock, dict) else None
    if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
        return True
    return action in listed


def _malformed(interlock: dict) -> str | None:
    if interlock.get("op") not in OPS:
        return f"unknown operator {interlock.get('op')!r}"
    if not _finite(interlock.get("value")):
        return f"value {interlock.get('value')!r} is not a finite number"
    if not isinstance(interlock.get("metric"), str):
        return "no metric named"
    max_age = interlock.get("max_age_s", DEFAULT_MAX_AGE_S)
    if not _finite(max_age) or max_age <= 0:
        return f"max_age_s {max_age!r} is not a positive number"
    return None


def _target(interlock: dict, asset):
    slug = interlock.get("asset")
    if slug is None:
        return asset
    return asset.twin.assets.filter(slug=slug).first() if isinstance(slug, str) else None


def check(interlock: Any, *, asset, now: datetime) -> InterlockResult:
    """Evaluate one interlock against the live state of ``asset`` (or its named asset).

    Reads the last received reading of the metric within ``max_age_s`` (index scans only:
    events by (asset, received_at, ts), samples by (asset, metric, ts)). Never raises for a
    malformed interlock or missing data: those deny, with the reason in ``detail``.
    """
    if not isinstance(interlock, dict):
        return InterlockResult("?", False, "interlock is not an object: deny")
    ident = str(interlock.get("id") or interlock.get("metric") or "?")
    problem = _malformed(interlock)
    target = _target(interlock, asset) if problem is None else None
    if problem is None and target is None:
        problem = f"unknown asset {interlock.get('asset')!r}"
    if problem:
        return InterlockResult(ident, False, f"{problem}: deny")
    metric, op, limit = interlock["metric"], interlock["op"], float(interlock["value"])
    max_age = float(interlock.get("max_age_s", DEFAULT_MAX_AGE_S))
    reading = latest_reading(target, metric, horizon_s=max_age, now=now)
    if reading is None or not math.isfinite(reading.value):
        return InterlockResult(ident, False, f"no reading of {metric} on {target}: deny")
    age = round(reading.age_s(now), 3)
    if reading.dated_in_future:
        return InterlockResult(ident, False, f"{metric} reading dated in the future "
                               f"({reading.ahead_s:.0f} s after its receipt; max skew "
                               f"{MAX_CLOCK_SKEW_S:g} s): deny", reading.value, age)
    newest = current_event_ts(target, now=now)
    lag = (newest - reading.ts).total_seconds() if newest else 0.0
    if age > max_age or lag > max_age:
        return InterlockResult(ident, False, f"{metric} reading is stale (received {age:.0f} s "
                               f"ago, {lag:.0f} s behind the asset; max {max_age:g} s): deny",
                               reading.value, age)
    passed = bool(OPS[op](reading.value, limit))
    verdict = "ok" if passed else "deny"
    return InterlockResult(ident, passed, f"{metric} {reading.value:g} {op} {limit:g} "
                           f"(age {age:.0f} s): {verdict}", reading.value, age)


def evaluate(
    interlocks: Iterable[Any], *, asset, action: str, now: datetime
) -> list[InterlockResult]:
    """Check every interlock that guards ``action``; the action may run iff all passed."""
    return [check(i, asset=asset, now=now) for i in interlocks if guards(i, action)]
