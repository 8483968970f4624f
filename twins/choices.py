from django.db import models


class AssetKind(models.TextChoices):
    PUMP = "pump", "Pump"
    VALVE = "valve", "Valve"
    MOTOR = "motor", "Motor"
    GENERIC = "generic", "Generic"


class Role(models.TextChoices):
    """The five role groups (``twins.roles``): what each may do is the group's permissions."""

    VIEWER = "viewer", "Viewer"
    AGENT = "agent", "Agent"
    EXECUTOR = "executor", "Executor"
    SUPERVISOR = "supervisor", "Supervisor"
    ADMIN = "admin", "Admin"
