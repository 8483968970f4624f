"""The proposal state machine's verbs as one table: which statuses allow each, and who may.

The services (``policy.services``) check the same statuses under the row lock and raise
``ProposalConflict``/``NotPermitted``; the dashboard asks ``allowed_verbs`` which buttons to
show. Both read this table, so a button is never offered for a step the server refuses.
Permissions follow ``twins.scoping.may``: the verb's global permission (a role's) and operate
rights on the proposal's twin.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.choices import ProposalStatus
from twins.scoping import may


@dataclass(frozen=True)
class Verb:
    """One step a person can take: allowed ``from_`` these statuses, with ``permission``."""

    from_: tuple[str, ...]
    permission: str


WAITING = (ProposalStatus.PENDING_APPROVAL, ProposalStatus.APPROVED,
           ProposalStatus.NEEDS_ANALYSIS)
VERBS: dict[str, Verb] = {
    "approve": Verb((ProposalStatus.PENDING_APPROVAL,), "policy.approve_proposal"),
    "reject": Verb(WAITING, "policy.approve_proposal"),
    "resimulate": Verb(WAITING, "policy.add_proposal"),
    "execute": Verb((ProposalStatus.APPROVED,), "policy.execute_proposal"),
    "rollback": Verb((ProposalStatus.EXECUTED, ProposalStatus.VERIFYING,
                      ProposalStatus.VERIFIED), "policy.rollback_proposal"),
}


def allowed_verbs(proposal, user) -> set[str]:
    """The verbs ``user`` may use on ``proposal`` now (its status, and ``may`` on its twin).

    A rollback is offered once: not after one has started (``rollback_started_at``).
    """
    verbs = set()
    for name, verb in VERBS.items():
        if proposal.status not in verb.from_ or not may(user, verb.permission, proposal.twin):
            continue
        if name == "rollback" and proposal.rollback_started_at is not None:
            continue
        verbs.add(name)
    return verbs
