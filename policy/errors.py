"""Errors of the policy services. Each maps to an HTTP status in the problem+json handler."""


class PolicyError(Exception):
    """Base class: ``status`` is the HTTP status, ``title`` the problem title."""

    status = 400
    title = "Policy error"


class NotPermitted(PolicyError):
    status, title = 403, "Not permitted"


class SelfApproval(NotPermitted):
    title = "Four-eyes rule: the proposer may not approve its own proposal"


class ProposalConflict(PolicyError):
    status, title = 409, "Proposal is not in a state that allows this"
