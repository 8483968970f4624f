"""The Celery application. Configuration comes from Django settings prefixed ``CELERY_``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "opstwin_site.settings")

app = Celery("opstwin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from celery.signals import worker_process_init  # noqa: E402

import opstwin_site.request_log  # noqa: E402,F401 - carries request ids into tasks


@worker_process_init.connect(weak=False)
def _trace_worker_process(**_kwargs) -> None:
    """TRACING_ENABLED=1: each worker process (after the prefork) gets its own tracer
    provider, as the OpenTelemetry Celery instrumentation requires."""
    from opstwin_site.tracing import setup_tracing

    setup_tracing("worker")
