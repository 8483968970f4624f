"""The only code that changes proposals and policy documents (see each module).

``propose`` / ``respond_to_anomaly`` / ``propose_action`` / ``evaluate_proposal`` /
``resimulate_proposal`` (proposals.py), ``approve_proposal`` / ``reject_proposal`` /
``expire_proposals`` (approvals.py), ``claim_execution`` / ``complete_execution`` /
``start_execution`` / ``execute_proposal``, the same four for rollbacks and
``recover_commands`` (execution.py), ``verify_proposal`` / ``verify_due`` (verification.py),
``publish_policy`` / ``active_policy`` (documents.py). Every transition is a conditional
UPDATE or runs under the proposal's row lock, and writes its audit entry and change event in
the same transaction.
"""

from policy.services.approvals import approve_proposal, expire_proposals, reject_proposal
from policy.services.common import serialize
from policy.services.documents import active_policy, publish_policy
from policy.services.execution import (
    claim_execution,
    claim_rollback,
    complete_execution,
    complete_rollback,
    execute_proposal,
    recover_commands,
    rollback_proposal,
    start_execution,
    start_rollback,
)
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
    "active_policy", "approve_proposal", "claim_execution", "claim_rollback",
    "complete_execution", "complete_rollback", "enqueue_execution", "evaluate_proposal",
    "execute_proposal", "expire_proposals", "propose", "propose_action", "publish_policy",
    "recover_commands", "reject_proposal", "resimulate_proposal", "respond_to_anomaly",
    "rollback_proposal", "serialize", "start_execution", "start_rollback", "verify_due",
    "verify_proposal",
]
