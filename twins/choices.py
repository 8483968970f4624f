from django.db import models


class AssetKind(models.TextChoices):
    PUMP = "pump", "Pump"
    VALVE = "valve", "Valve"
    MOTOR = "motor", "Motor"
    GENERIC = "generic", "Generic"
