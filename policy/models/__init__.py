"""Models of the policy app: proposals and approvals, policy documents."""

from policy.models.document import PolicyDocument, PolicyHighWater
from policy.models.proposal import Approval, Proposal

__all__ = [
    "Approval", "PolicyDocument", "PolicyHighWater", "Proposal",
]
