"""Attempts of one command (an execution or a rollback): leases, re-sends, giving up.

A claimed command is "in flight" (``executing``, or ``rollback_started_at`` set while the
proposal is still executed/verifying/verified) until its outcome is recorded. Its state lives
in ``Proposal.execution`` / ``Proposal.rollback`` (action.v1, in-flight form)::

    {"command_id": "proposal-7", "preflight": {...}, "claimed_at": iso, "attempts": 1,
     "lease_until": iso | null}

Sending takes a lease first (row lock: ``attempts`` + 1, ``lease_until`` = now +
``command_timeout_s()``), commits, then publishes with the same ``command_id`` every time and
``expires_at`` = ``lease_until``. Whoever finds the command in flight without a live lease may
send it again (a redelivered Celery task, the sweeper): the process that held the lease died
before recording the outcome. The asset de-duplicates by ``command_id`` (an applied id is
acknowledged again without a second effect) and refuses an expired copy, so the effect happens
at most once, and a command given up on (``POLICY_COMMAND_MAX_ATTEMPTS`` attempts without an
outcome: failed) cannot take effect later.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policy.choices import ProposalStatus
from policy.models import Proposal
from policy.services.common import audit, load, notify_on_commit, serialize, transition, update
from policy.transitions import VERBS

log = logging.getLogger(__name__)
ROLLBACK_FROM = list(VERBS["rollback"].from_)
FAULT_POINTS = ("after_claim", "after_send")


@dataclass(frozen=True)
class Command:
    """Which command of a proposal: its JSON field, id suffix and audit vocabulary."""

    field: str
    suffix: str
    resent: str
    gave_up: str

    def command_id(self, proposal: Proposal) -> str:
        """Stable for the proposal's lifetime: every re-send carries the same id."""
        return f"proposal-{proposal.pk}{self.suffix}"

    def in_flight(self, proposal: Proposal) -> bool:
        """Claimed, and no outcome recorded yet."""
        if self.field == "execution":
            return proposal.status == ProposalStatus.EXECUTING
        return proposal.status in ROLLBACK_FROM and proposal.rollback_started_at is not None

    def claim_state(self, proposal: Proposal, now: datetime, **extra) -> dict:
        """The state a fresh claim stores: no attempt yet, no lease."""
        return {"command_id": self.command_id(proposal), "claimed_at": now.isoformat(),
                "attempts": 0, "lease_until": None} | extra

    def state(self, proposal: Proposal) -> dict:
        """The in-flight state (rows claimed before attempts were recorded get defaults)."""
        state = dict(getattr(proposal, self.field) or {})
        state.setdefault("command_id", self.command_id(proposal))
        state.setdefault("attempts", 1)  # an older claim may have been sent once already
        state.setdefault("lease_until", None)
        return state


EXECUTION = Command("execution", "", "proposal.execute_resent", "proposal.failed")
ROLLBACK = Command("rollback", "-rollback", "proposal.rollback_resent", "alert.rollback_failed")


def command_timeout_s() -> float:
    """Longest one attempt may take (s): connect and subscribe, PUBACK, the asset's ack, + 1."""
    return 2 * settings.MQTT_COMMAND_ACK_TIMEOUT + settings.POLICY_COMMAND_EFFECT_TIMEOUT + 1.0


def _when(value) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def due(proposal: Proposal, kind: Command, now: datetime) -> bool:
    """True if nobody holds a live lease and the claim is older than one attempt may take
    (a fresh claim waits for the task its request enqueued)."""
    state = kind.state(proposal)
    lease = _when(state["lease_until"])
    if lease is not None:
        return lease <= now
    started = proposal.rollback_started_at if kind is ROLLBACK else proposal.decided_at
    claimed = _when(state.get("claimed_at")) or started or proposal.created_at
    return claimed + timedelta(seconds=command_timeout_s()) <= now


def take_attempt(proposal_id: int, kind: Command, *, recovering: bool,
                 actor=None) -> tuple[Proposal, dict | None]:
    """Lease the next attempt of an in-flight command, committed before anything is sent.

    Returns ``(proposal, state)``; ``state`` None means do not send: not in flight (done or
    never claimed), a live lease held elsewhere, not yet ``due`` (``recovering``), or the
    attempts are exhausted, in which case the command is recorded as failed (audited).
    The race it closes: a redelivered task and the sweeper finding one stuck command; the
    row lock lets one of them lease it, the other sees the live lease.
    """
    now = timezone.now()
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if not kind.in_flight(proposal):
            return proposal, None
        state = kind.state(proposal)
        lease = _when(state["lease_until"])
        if (lease is not None and lease > now) or (recovering and not due(proposal, kind, now)):
            return proposal, None
        if state["attempts"] >= settings.POLICY_COMMAND_MAX_ATTEMPTS:
            return _give_up(proposal, kind, state, now), None
        before = serialize(proposal)
        state |= {"attempts": state["attempts"] + 1,
                  "lease_until": (now + timedelta(seconds=command_timeout_s())).isoformat()}
        proposal = update(proposal_id, **{kind.field: state})
        if state["attempts"] > 1:
            audit(proposal, actor=actor or "sweeper", action=kind.resent, before=before,
                  reason=f"{state['command_id']}: attempt {state['attempts']} of "
                         f"{settings.POLICY_COMMAND_MAX_ATTEMPTS}, same command id; the "
                         f"previous attempt recorded no outcome")
    return proposal, state


def _give_up(proposal: Proposal, kind: Command, state: dict, now: datetime) -> Proposal:
    detail = (f"no outcome after {state['attempts']} attempts; the asset refuses copies "
              f"that arrive after they expire")
    final = {k: v for k, v in state.items() if k != "lease_until"} | {
        "delivery": {"ok": False, "detail": "unknown: " + detail},
        "effect": {"ok": False, "status": "unknown", "detail": detail},
        "delivered": False, "acknowledged": False, "at": now.isoformat()}
    expected = [ProposalStatus.EXECUTING] if kind is EXECUTION else ROLLBACK_FROM
    before = serialize(proposal)
    failed = transition(proposal.pk, expected, status=ProposalStatus.FAILED,
                        **{kind.field: final})
    audit(failed, actor="sweeper", action=kind.gave_up, before=before,
          reason=f"{state['command_id']}: {detail}")
    notify_on_commit(failed)
    return failed


def current(proposal: Proposal, kind: Command, state: dict) -> bool:
    """True if ``state`` is still the command's newest attempt (a failure may be recorded
    only by it; an acknowledgement from any attempt proves the one effect)."""
    return kind.in_flight(proposal) and kind.state(proposal)["attempts"] == state["attempts"]


def final_state(state: dict, outcome: dict) -> dict:
    """The recorded form: the outcome (action.v1) with the claim's fields, lease dropped."""
    return outcome | {k: v for k, v in state.items() if k != "lease_until"}


def fault_point(point: str, state: dict) -> None:
    """Fault injection for recovery tests: SIGKILL this process at ``point`` of a first
    attempt when ``POLICY_FAULT_POINT`` names it (never set in production)."""
    if point == settings.POLICY_FAULT_POINT and state["attempts"] == 1:
        log.warning("POLICY_FAULT_POINT=%s: killing process %s", point, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def stuck(now: datetime) -> list[tuple[int, Command]]:
    """In-flight commands whose lease lapsed (or that were never leased in time)."""
    rows = Proposal.objects.filter(status=ProposalStatus.EXECUTING)
    found = [(p.pk, EXECUTION) for p in rows if due(p, EXECUTION, now)]
    rolling = Proposal.objects.filter(status__in=ROLLBACK_FROM, rollback_started_at__isnull=False)
    return found + [(p.pk, ROLLBACK) for p in rolling if due(p, ROLLBACK, now)]
