from django.db import models


class RiskLevel(models.TextChoices):
    LOW = "LOW", "Low"
    MEDIUM = "MEDIUM", "Medium"
    HIGH = "HIGH", "High"
    CRITICAL = "CRITICAL", "Critical"


class Decision(models.TextChoices):
    AUTO_EXECUTE = "auto_execute", "Execute automatically"
    REQUIRE_APPROVAL = "require_approval", "Ask a human"
    REQUIRE_ANALYSIS = "require_analysis", "Analyse further"
    REJECT = "reject", "Reject"


class ProposalStatus(models.TextChoices):
    """Lifecycle of a proposal; every move is a ``policy.services`` call, audited.

    ::

        (decided at creation)  auto_execute → approved        require_approval → pending_approval
                               require_analysis → needs_analysis  reject → rejected
        pending_approval → approved (enough distinct approvers) | rejected | expired
        needs_analysis / pending_approval / approved → (re-simulate) → decided again
        approved → executing (claimed once) → executed (asset acked) | failed
        approved → pending_approval (automatic approval, policy no longer trusted)
        executed → verifying → verified | rolled_back (breach: rollback acked) | failed
                             | executed (inconclusive: too few readings; an alert)
        executed / verifying / verified → rolled_back (a supervisor) | failed (not acked)

    ``proposed`` is reserved: proposals are decided in the transaction that creates them.
    ``needs_analysis`` is kept: "analyse further" waits for a re-simulation or a rejection,
    never for approval.
    """

    PROPOSED = "proposed", "Proposed"
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    EXECUTING = "executing", "Executing"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed"
    VERIFYING = "verifying", "Verifying"
    VERIFIED = "verified", "Verified"
    ROLLED_BACK = "rolled_back", "Rolled back"
    NEEDS_ANALYSIS = "needs_analysis", "Needs analysis"


class NotificationKind(models.TextChoices):
    """What a person can be told about (``policy.notifications``), each with the permission
    the recipient needs on the twin (``policy.notifications.KIND_PERMISSION``)."""

    APPROVAL_NEEDED = "approval_needed", "A proposal waits for approval"
    ANOMALY_ESCALATED = "anomaly_escalated", "A critical anomaly is not acknowledged in time"
    EXECUTION_FAILED = "execution_failed", "An execution or rollback failed"
    ROLLED_BACK = "rolled_back", "An execution was rolled back"


class Channel(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
