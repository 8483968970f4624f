from django.apps import AppConfig


class AiwConfig(AppConfig):
    name = "aiw"
    verbose_name = "AIW protocol (agent feed)"

    def ready(self) -> None:
        from aiw import openapi  # noqa: F401 - registers the bearer scheme with drf-spectacular
        from aiw.feed import announce_committed
        from twins.feed import change_committed

        change_committed.connect(announce_committed, dispatch_uid="aiw.feed.announce_committed")
