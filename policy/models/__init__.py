"""Models of the policy app: proposals and approvals, policy documents, the audit chain."""

from policy.models.audit import AuditAnchor, AuditEntry
from policy.models.document import PolicyDocument, PolicyHighWater
from policy.models.proposal import Approval, Proposal

__all__ = [
    "Approval", "AuditAnchor", "AuditEntry", "PolicyDocument", "PolicyHighWater", "Proposal",
]
