from django.db import models


class Quality(models.TextChoices):
    GOOD = "good", "Good"
    UNCERTAIN = "uncertain", "Uncertain"
    BAD = "bad", "Bad"


class AnomalyKind(models.TextChoices):
    DRIFT = "drift", "Drift"
    SPIKE = "spike", "Spike"
    OUTLIER = "outlier", "Outlier"


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class AnomalyStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    CLEARED = "cleared", "Cleared"


class IngestSource(models.TextChoices):
    MQTT = "mqtt", "MQTT"
    HTTP = "http", "HTTP"
    REPLAY = "replay", "Direct replay"
