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


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    AGENT = "agent", "Agent"
    EXECUTOR = "executor", "Executor"
    SUPERVISOR = "supervisor", "Supervisor"
    ADMIN = "admin", "Admin"
