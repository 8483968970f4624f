from django.apps import AppConfig


class AiwConfig(AppConfig):
    name = "aiw"
    verbose_name = "AIW protocol (agent feed)"
