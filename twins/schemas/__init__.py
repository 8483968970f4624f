"""The AIW JSON Schemas (draft 2020-12), loaded once and served by ``/schemas``.

Each ``<name>.json`` file in this folder is one schema whose ``$id`` is its bare name
(``proposal.v1``), and schemas refer to each other by relative ``$ref`` (``"$ref": "decision.v1"``).
Served at ``/schemas/<name>``, a schema's ``$id`` becomes that absolute URL (``served``), so a
standard validator resolves the relative ``$ref``s by fetching the neighbouring URLs; here they
resolve offline, against the bare names. ``validator(name)`` returns a cached ``jsonschema``
validator with format checking (uuid, date-time) switched on.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent
# The schema of ChangeEvent.data for each resource type on the feed.
RESOURCE_SCHEMAS = {
    "twin": "twin.v1", "asset": "asset.v1", "anomaly": "anomaly.v1",
    "simulation": "simulation.v1", "proposal": "proposal.v1", "whatif_model": "whatif-model.v1",
    "policy": "policy.v1", "detector_config": "detector-config.v1",
    "agent_token": "agent-token.v1", "asset_type": "asset-type.v1",
    "asset_state": "asset-state.v1", "simulation_progress": "simulation-progress.v1",
    "notification_subscription": "notification-subscription.v1",
}
PROBLEM_SCHEMA = "problem.v1"
CATALOGUE_SCHEMA = "action-catalogue.v1"


@cache
def schema_names() -> list[str]:
    """Names of every served schema, e.g. ``["anomaly.v1", "telemetry.v1", ...]``."""
    return sorted(p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json"))


@cache
def load_schema(name: str) -> dict:
    """The schema document ``name`` (raises ``KeyError`` for unknown names)."""
    if name not in schema_names():
        raise KeyError(name)
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


def served(name: str, url: str) -> dict:
    """Schema ``name`` as served at the absolute ``url``: its ``$id`` is that URL (KeyError for
    unknown names). Relative ``$ref``s then resolve against the server's ``/schemas/``."""
    return load_schema(name) | {"$id": url}


@cache
def registry() -> Registry:
    """Every schema under its ``$id``, so ``$ref`` between them resolves offline."""
    return Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in schema_names()
    )


@cache
def validator(name: str) -> Draft202012Validator:
    """A cached validator for schema ``name`` with format checking on."""
    return Draft202012Validator(load_schema(name), registry=registry(),
                                format_checker=FormatChecker())


def errors(name: str, document: object) -> list[str]:
    """Every violation of schema ``name`` by ``document`` as ``"path: message"`` lines."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator(name).iter_errors(document)]
