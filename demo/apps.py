from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The top layer: the SKAB and NAB replays, the simulated plant and scoring against labels.

    Nothing in the product imports it; it drives the product from outside, as a plant and its
    operators would (``manage.py demo``).
    """

    name = "demo"
    verbose_name = "Demo (SKAB/NAB replay)"
