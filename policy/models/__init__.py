"""Models of the policy app: proposals and approvals, policy documents, notifications."""

from policy.models.document import PolicyDocument, PolicyHighWater
from policy.models.notification import Notification, NotificationDelivery, NotificationSubscription
from policy.models.proposal import Approval, Proposal

__all__ = [
    "Approval", "Notification", "NotificationDelivery", "NotificationSubscription",
    "PolicyDocument", "PolicyHighWater", "Proposal",
]
