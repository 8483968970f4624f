"""The only code that changes proposals and policy documents (see each module).

``propose`` / ``respond_to_anomaly`` / ``propose_action`` / ``evaluate_proposal`` /
``resimulate_proposal`` (proposals.py), ``approve_proposal`` / ``reject_proposal`` /
``expire_proposals`` (approvals.py), ``execute_proposal`` / ``rollback_proposal``
(execution.py), ``verify_proposal`` / ``verify_due`` (verification.py), ``publish_policy`` /
``active_policy`` (documents.py). Every transition is a conditional UPDATE or runs under the
proposal's row lock, and writes its audit entry and change event in the same transaction.
"""

from policy.services.approvals import approve_proposal, expire_proposals, reject_proposal
from policy.services.common import serialize
from policy.services.documents import active_policy, publish_policy
from policy.services.execution import execute_proposal, rollback_proposal
from policy.services.proposals import (
    enqueue_execution,
    evaluate_proposal,
    propose,
    propose_action,
    resimulate_proposal,
    respond_to_anomaly,
)
from policy.services.verification import verify_due, verify_proposal

__all__ = [
    "active_policy", "approve_proposal", "enqueue_execution", "evaluate_proposal",
    "execute_proposal", "expire_proposals", "propose", "propose_action", "publish_policy",
    "reject_proposal", "resimulate_proposal", "respond_to_anomaly", "rollback_proposal",
    "serialize", "verify_due", "verify_proposal",
]
