"""Validation of detector parameters; every failure raises ValueError naming the parameter."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(params: dict[str, Any], key: str, low: int) -> int:
    """Return ``params[key]`` as an int >= ``low``; raise ValueError otherwise."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)):
        raise ValueError(f"parameter {key!r} must be an integer, got {value!r}")
    if not np.isfinite(float(value)) or float(value) != int(value) or int(value) < low:
        raise ValueError(f"parameter {key!r} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_float(
    params: dict[str, Any], key: str, low: float, high: float = np.inf, open_low: bool = True
) -> float:
    """Return ``params[key]`` as a float in (low, high] (or [low, high]); else ValueError."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"parameter {key!r} must be a number, got {value!r}")
    v = float(value)
    too_low = v <= low if open_low else v < low
    if not np.isfinite(v) or too_low or v > high:
        bracket = "(" if open_low else "["
        raise ValueError(f"parameter {key!r} must be in {bracket}{low}, {high}], got {value!r}")
    return v


def check_bool(params: dict[str, Any], key: str) -> bool:
    """Return ``params[key]`` if it is a bool; raise ValueError otherwise."""
    value = params[key]
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"parameter {key!r} must be true or false, got {value!r}")
    return bool(value)


def check_choice(params: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """Return ``params[key]`` if it is one of ``choices``; raise ValueError otherwise."""
    value = params[key]
    if value not in choices:
        raise ValueError(f"parameter {key!r} must be one of {choices}, got {value!r}")
    return str(value)
