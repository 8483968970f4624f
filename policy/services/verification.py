"""Verification after execution: observed telemetry against the simulated band.

Plan (stored in ``Proposal.verification`` when an execution is acknowledged): the simulation's
first judged metric and its predicted band ``[p5, p95]`` (``SimulationRun.result["metrics"]
[metric]``), and a window of ``window_s`` seconds of the asset's own clock starting at its
newest event at execution, or later where the asset's ack says when its readings begin to
answer the command (``effective_from``, ``policy.command_publisher``): readings already on
their way at execution show the plant before the command and are not judged (``from_ts``).
The window is judged once telemetry reaches its end,
or at the wall-clock deadline ``verify_until`` (execution + ``window_s``), whichever comes
first (Celery task with a countdown, plus the beat sweep ``verify_due``).

Judgement (policy ``verification`` rule): with at least ``min_samples`` readings, a breach is
more than ``max_outside_share`` of them outside the band (a p5–p95 band leaves 10 % outside
by construction, hence a share, not "any reading"). A breach is audited as an alert and the
stored rollback action is sent at once. Too few readings is "inconclusive": audited as an
alert, the proposal returns to executed and no action is taken blind.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policy.choices import ProposalStatus
from policy.errors import InterlockBlocked, NoRollback, PolicyError, ProposalConflict
from policy.models import Proposal
from policy.services.common import audit, load, notify_on_commit, serialize, transition, update
from policy.state import newest_event_ts
from telemetry.models import TelemetrySample


def _band(proposal: Proposal) -> tuple[str | None, list[float] | None]:
    run = proposal.simulation
    if run is None or not run.result:
        return None, None
    metric = next(iter(run.request.get("metrics") or []), None)
    summary = (run.result.get("metrics") or {}).get(metric) or {}
    if "p5" not in summary or "p95" not in summary:
        return metric, None
    return metric, [float(summary["p5"]), float(summary["p95"])]


def start_verification(proposal: Proposal, *, request=None) -> Proposal:
    """executed → verifying with the plan (caller's transaction); inconclusive without a band."""
    from policy.services.documents import active_policy

    rule = active_policy(proposal.twin).rules.verification
    metric, band = _band(proposal)
    now = timezone.now()
    newest = newest_event_ts(proposal.asset) or now
    start, ignored = _window_start(proposal, newest, rule.window_s)
    plan = {"metric": metric, "band": band, "window_s": rule.window_s,
            "max_outside_share": rule.max_outside_share, "min_samples": rule.min_samples,
            "from_ts": start.isoformat(),
            "started_at": now.isoformat(), "outcome": None}
    if ignored:
        plan["effective_from_ignored"] = ignored
    if band is None:
        plan["outcome"] = "inconclusive"
        checked = update(proposal.pk, verification=plan)
        audit(checked, actor="verifier", action="alert.verification_inconclusive",
              reason="no simulated band to verify against", request=request)
        return checked
    before = serialize(proposal)
    verifying = transition(proposal.pk, [ProposalStatus.EXECUTED],
                           status=ProposalStatus.VERIFYING, verification=plan,
                           verify_until=now + timedelta(seconds=rule.window_s) + (start - newest))
    audit(verifying, actor="verifier", action="proposal.verifying", before=before,
          reason=f"{metric} expected in [{band[0]:g}, {band[1]:g}] for {rule.window_s:g} s"
                 + (f" from {start.isoformat()}, when the asset's readings answer the command"
                    if start > newest else "") + (f"; {ignored}" if ignored else ""),
          request=request)
    delay = rule.window_s + (start - newest).total_seconds()
    transaction.on_commit(lambda: _schedule(proposal.pk, delay))
    return verifying


def _window_start(proposal: Proposal, newest, window_s: float) -> tuple:
    """(start of the verification window, why the ack's ``effective_from`` was ignored or
    None). The window starts at ``newest`` (the asset's newest reading at execution), or at the
    ack's ``effective_from`` when that is later but at most ``window_s`` after it: the device's
    clock may move the window past readings already on their way, never further (a later
    value would leave the window empty, an inconclusive verification instead of a judged one)."""
    said = ((proposal.execution or {}).get("effect") or {}).get("effective_from")
    effective = parse_datetime(said) if isinstance(said, str) else None
    if effective is None or effective <= newest:
        return newest, None
    if effective - newest > timedelta(seconds=window_s):
        return newest, (f"the ack's effective_from {said} is more than {window_s:g} s after "
                        f"the newest reading ({newest.isoformat()}); ignored")
    return effective, None


def _schedule(proposal_id: int, window_s: float) -> None:
    from policy.tasks import verify_proposal as verify_task

    verify_task.apply_async(args=[proposal_id], countdown=window_s)


def observe(proposal: Proposal, now) -> dict | None:
    """The window's readings judged against the band, or None while the window is open."""
    plan = proposal.verification
    start = parse_datetime(plan["from_ts"])
    end = start + timedelta(seconds=plan["window_s"])
    newest = newest_event_ts(proposal.asset)
    if (newest is None or newest < end) and now < proposal.verify_until:
        return None
    values = list(TelemetrySample.objects.filter(
        asset=proposal.asset, metric=plan["metric"], ts__gt=start, ts__lte=end,
    ).values_list("value", flat=True))
    low, high = plan["band"]
    outside = sum(1 for v in values if not low <= v <= high)
    share = outside / len(values) if values else None
    if len(values) < plan["min_samples"]:
        outcome = "inconclusive"
    else:
        outcome = "breach" if share > plan["max_outside_share"] else "verified"
    return {"outcome": outcome, "n": len(values), "outside": outside, "outside_share": share,
            "judged_at": now.isoformat()}


def _record(proposal_id: int, now) -> tuple[Proposal, dict | None]:
    with transaction.atomic():
        proposal = load(proposal_id, lock=True)
        if proposal.status != ProposalStatus.VERIFYING or proposal.verification.get("outcome"):
            return proposal, None
        judged = observe(proposal, now)
        if judged is None:
            return proposal, None
        plan, before = proposal.verification | judged, serialize(proposal)
        summary = f"{judged['outside']} of {judged['n']} readings outside the band"
        if judged["outcome"] == "verified":
            proposal = transition(proposal_id, [ProposalStatus.VERIFYING],
                                  status=ProposalStatus.VERIFIED, verification=plan)
            audit(proposal, actor="verifier", action="proposal.verified", before=before,
                  reason=summary)
        elif judged["outcome"] == "inconclusive":
            proposal = transition(proposal_id, [ProposalStatus.VERIFYING],
                                  status=ProposalStatus.EXECUTED, verification=plan)
            audit(proposal, actor="verifier", action="alert.verification_inconclusive",
                  before=before, reason=f"too few readings to verify: {summary}")
        else:
            proposal = update(proposal_id, verification=plan)
            audit(proposal, actor="verifier", action="alert.verification_breach",
                  before=before, reason=summary)
    return proposal, judged


def verify_proposal(proposal_id: int, now=None) -> Proposal:
    """Judge a verifying proposal whose window is complete; roll back on a breach.

    A no-op while the window is open or once judged (safe to call repeatedly, concurrently:
    the judgement is taken under the row lock and recorded once). A recorded breach whose
    rollback never started (a crash in between) is rolled back on the next call.
    """
    proposal, _ = _record(proposal_id, now or timezone.now())
    breached = (proposal.verification or {}).get("outcome") == "breach"
    if proposal.status != ProposalStatus.VERIFYING or not breached or \
            proposal.rollback_started_at is not None:
        return proposal
    from policy.services.execution import rollback_proposal

    try:
        return rollback_proposal(proposal_id, reason="verification breach: observed telemetry "
                                                     "left the simulated band")
    except (NoRollback, InterlockBlocked) as exc:
        return _rollback_blocked(proposal_id, exc)
    except ProposalConflict:
        return load(proposal_id)  # a concurrent rollback (manual or another sweep) won


def _rollback_blocked(proposal_id: int, exc: PolicyError) -> Proposal:
    with transaction.atomic():
        before = serialize(load(proposal_id, lock=True))
        try:
            failed = transition(proposal_id, [ProposalStatus.VERIFYING],
                                status=ProposalStatus.FAILED)
        except ProposalConflict:
            return load(proposal_id)
        audit(failed, actor="verifier", action="alert.rollback_blocked", before=before,
              reason=f"breach, and the rollback could not run: {exc}")
        notify_on_commit(failed)
    return failed


def verify_due(now=None) -> int:
    """Judge every verifying proposal whose window may be complete (beat sweep); the count."""
    now = now or timezone.now()
    count = 0
    for pk in list(Proposal.objects.filter(status=ProposalStatus.VERIFYING)
                   .values_list("pk", flat=True)):
        try:
            proposal = verify_proposal(pk, now)
        except Proposal.DoesNotExist:  # deleted with its twin meanwhile
            continue
        count += proposal.status != ProposalStatus.VERIFYING
    return count
