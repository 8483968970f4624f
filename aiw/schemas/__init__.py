"""The AIW JSON Schemas (draft 2020-12), loaded once and served by ``/schemas``.

Each ``<name>.json`` file in this folder is one schema; ``validator(name)`` returns a cached
``jsonschema`` validator with format checking (uuid, date-time) switched on.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_names() -> list[str]:
    """Names of every served schema, e.g. ``["anomaly.v1", "telemetry.v1", ...]``."""
    return sorted(p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json"))


@cache
def load_schema(name: str) -> dict:
    """The schema document ``name`` (raises ``KeyError`` for unknown names)."""
    if name not in schema_names():
        raise KeyError(name)
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


@cache
def validator(name: str) -> Draft202012Validator:
    """A cached validator for schema ``name`` with format checking on."""
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())
