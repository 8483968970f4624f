from django.apps import AppConfig


class AiwConfig(AppConfig):
    name = "aiw"
    verbose_name = "AIW protocol (agent feed)"

    def ready(self) -> None:
        from aiw import openapi  # noqa: F401 - registers the bearer scheme with drf-spectacular
