"""The Celery application. Configuration comes from Django settings prefixed ``CELERY_``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")

app = Celery("opstwin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import opstwin_site.request_log  # noqa: E402,F401 - carries request ids into tasks
