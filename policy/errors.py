"""Errors of the policy services. Each maps to an HTTP status in the problem+json handler."""

from twins.errors import ServiceError


class PolicyError(ServiceError):
    """Base class: ``status`` is the HTTP status, ``title`` the problem title."""

    status = 400
    title = "Policy error"


class NotPermitted(PolicyError):
    status, title = 403, "Not permitted"


class SelfApproval(NotPermitted):
    title = "Four-eyes rule: the proposer may not approve its own proposal"


class ProposalConflict(PolicyError):
    status, title = 409, "Proposal is not in a state that allows this"


class ProposalExpired(ProposalConflict):
    title = "Proposal expired: its approval window has passed"


class StaleEvidence(ProposalConflict):
    title = "Evidence is stale: the asset's state drifted; re-simulate before it can run"


class InterlockBlocked(ProposalConflict):
    title = "Blocked by an interlock"


class AutomationDenied(ProposalConflict):
    title = "Automation denied: the twin's policy is not trusted; a human must approve"


class NoRollback(ProposalConflict):
    title = "No rollback action is defined for this action; intervene by hand"
