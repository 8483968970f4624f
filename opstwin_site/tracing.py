"""Optional OpenTelemetry tracing of the web, the ingest processes and the Celery workers.

Off by default. ``TRACING_ENABLED=1`` turns it on for every process that calls
``setup_tracing`` (``opstwin_site/asgi.py``, ``manage.py``, and each Celery worker process):

- Django requests (server spans, ASGI and WSGI alike), Celery task publish and run (the
  instrumentation carries the trace context in the message headers), and psycopg queries
  (client spans with the statement). Celery workers are set up per pool process
  (``worker_process_init``, prefork, the default pool).
- Spans go to ``TRACING_EXPORTER``: ``otlp`` (OTLP over HTTP; the endpoint and headers come
  from the SDK's standard ``OTEL_EXPORTER_OTLP_*`` variables, default
  ``http://localhost:4318/v1/traces``) or ``console`` (each span as JSON on stdout, for a quick
  look). ``TRACING_SERVICE_NAME`` names the service (default ``opstwin``); the resource
  attribute ``opstwin.process`` says which kind of process (web, worker, manage) made a span.
- Sampling follows the SDK's ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default:
  every trace, parent-based).

The packages (``opentelemetry-sdk``, the OTLP/HTTP exporter and the Django, ASGI, Celery and
psycopg instrumentations) are ordinary dependencies, so the Docker image has them.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_configured = False


def setup_tracing(process: str, *, exporter=None, simple: bool = False) -> bool:
    """Install the tracer provider and the instrumentations once per process, when
    ``settings.TRACING_ENABLED``; returns whether tracing is on.

    ``process``: ``web``, ``worker`` or ``manage`` (a span attribute). ``exporter``: a span
    exporter to use instead of the configured one (tests pass the SDK's in-memory exporter);
    ``simple``: export each span as it ends instead of in batches. Must run after Django's
    settings are configured and before the request handler is built (the Django
    instrumentation adds its middleware to ``settings.MIDDLEWARE``).
    Raises ``ImproperlyConfigured`` when tracing is on but the packages are missing.
    """
    global _configured
    from django.conf import settings

    if not settings.TRACING_ENABLED:
        return False
    if _configured:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "TRACING_ENABLED=1 needs the OpenTelemetry packages listed in pyproject.toml"
        ) from exc
    resource = Resource.create(
        {"service.name": settings.TRACING_SERVICE_NAME, "opstwin.process": process}
    )
    provider = TracerProvider(resource=resource)
    processor = SimpleSpanProcessor if simple else BatchSpanProcessor
    provider.add_span_processor(processor(exporter or _configured_exporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    PsycopgInstrumentor().instrument(enable_commenter=False)
    _configured = True
    logger.info(
        "OpenTelemetry tracing on (%s, exporter %s)",
        process,
        type(exporter).__name__ if exporter else settings.TRACING_EXPORTER,
    )
    return True


def _configured_exporter():
    from django.conf import settings

    if settings.TRACING_EXPORTER == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
