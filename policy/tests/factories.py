"""Factories for policy tests: telemetry rows, simulation runs, signed policies, proposals.

Rows are written directly (not through the services under test) so each test sets up exactly
the state it needs; the services are what the tests exercise.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from policy.choices import Decision, ProposalStatus
from policy.models import Proposal
from policy.rules import SCHEMA
from policy.services import publish_policy
from policy.services.documents import next_version
from policy.signing import sign
from policy.state import evidence_snapshot
from simulation.models import SimulationRun, SimulationStatus
from telemetry.models import TelemetryEvent, TelemetrySample
from twins.state import record_reported

NORMAL = {"Temperature": 89.0, "Volume Flow RateRMS": 125.0, "Pressure": 1.0}


def reading(asset, values: dict | None = None, *, ts=None, received_at=None) -> None:
    """One telemetry event of ``asset`` carrying ``values`` (default ``NORMAL``), now."""
    now = timezone.now()
    ts = ts or now
    TelemetryEvent.objects.create(event_id=uuid.uuid4(), asset=asset, ts=ts, quality="good",
                                  source="replay", received_at=received_at or now)
    values = NORMAL if values is None else values
    TelemetrySample.objects.bulk_create(
        TelemetrySample(ts=ts, asset=asset, metric=m, value=v) for m, v in values.items())
    report(asset, [(ts, values)], received_at or now)


def report(asset, readings: list, received_at) -> None:
    """Fold ``[(ts, {metric: value})]`` into the asset's reported state, as ingest does in
    the transaction that stores them (``twins.state.record_reported``)."""
    with connection.cursor() as cursor:
        record_reported(cursor, [(asset.pk, ts, values) for ts, values in readings],
                        received_at)


def window(asset, metric: str, values: list[float], *, start, step_s: float = 1.0) -> None:
    """Readings of one metric at ``start + k * step_s`` (sensor time), received now."""
    for k, value in enumerate(values):
        reading(asset, {metric: value}, ts=start + timedelta(seconds=k * step_s))


def simulation(asset, *, metric: str = "Volume Flow RateRMS", band=(120.0, 130.0),
               p_breach: float = 0.0, converged: bool = True, std: float = 1.0,
               status: str = SimulationStatus.SUCCEEDED) -> SimulationRun:
    """A finished what-if run with the shape ``simulation.services.run_what_if`` stores."""
    return SimulationRun.objects.create(
        asset=asset, status=status, engine="monte_carlo", seed=1, n_samples=1000,
        request={"action": "reduce_load", "parameters": {"fraction": 0.1}, "metrics": [metric],
                 "at": timezone.now().isoformat(),
                 "state": {m: {"mean": v, "std": std, "n": 300, "last": v}
                           for m, v in NORMAL.items()}},
        result={"n_samples": 1000, "converged": converged,
                "metrics": {metric: {"p5": band[0], "p50": sum(band) / 2, "p95": band[1]}},
                "constraints": [{"metric": metric, "op": ">", "limit": band[1],
                                 "p_breach": p_breach, "stderr": 0.0}]},
    )


def policy_body(twin, version: int | None = None, **sections) -> str:
    """A policy.v1 body for ``twin`` (next version unless given) with ``sections`` merged."""
    body = {"schema": SCHEMA, "twin": twin.slug,
            "version": version if version is not None else next_version(twin)} | sections
    return json.dumps(body, indent=2)


def signed_policy(twin, key, *, key_id: str = "test", **sections):
    """Publish a correctly signed next version; returns (document, verdict)."""
    body = policy_body(twin, **sections)
    return publish_policy(twin=twin, body=body, signature=sign(body, key), key_id=key_id)


def proposal(asset, *, status=ProposalStatus.PENDING_APPROVAL, proposed_by=None,
             action: str = "reduce_load", risk: str = "MEDIUM", approvals_required: int = 1,
             run: SimulationRun | None = None, decision=Decision.REQUIRE_APPROVAL,
             expires_in_s: float = 3600, rollback_action: str = "restore_load") -> Proposal:
    """A proposal row as the policy would leave it, with evidence matching the current state."""
    run = run or simulation(asset)
    return Proposal.objects.create(
        twin=asset.twin, asset=asset, simulation=run, action=action,
        parameters={"fraction": 0.1}, risk_level=risk, confidence=0.8, confidence_breakdown={},
        decision=decision, status=status, proposed_by=proposed_by,
        approvals_required=approvals_required, policy_version=1, policy_trusted=True,
        evidence=evidence_snapshot(asset, run, sigmas=4.0),
        expires_at=timezone.now() + timedelta(seconds=expires_in_s),
        rollback_action=rollback_action,
    )


def approved(asset, *approvers, **fields) -> Proposal:
    """An approved proposal carrying one live approval per ``approvers`` user."""
    from policy.models import Approval

    made = proposal(asset, status=ProposalStatus.APPROVED, approvals_required=len(approvers),
                    **fields)
    now = timezone.now()
    for user in approvers:
        Approval.objects.create(proposal=made, approver=user, role="supervisor", created_at=now,
                                expires_at=made.expires_at)
    return made
