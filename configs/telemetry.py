"""Process-wide tracing set-up and trace-context propagation, shared by the API and
the workers (each process calls `setup_tracing` once at start).

Off by default: without `observability.otlp_endpoint` no tracer provider is installed,
so every span the code opens is OpenTelemetry's no-op span and nothing is exported or
even buffered. The SDK and exporter are imported only when an endpoint is configured.

The trace context crosses the queue as W3C `traceparent`/`tracestate` message headers
(`trace_headers` on the sending side, `context_from` on the worker side), so a model
call in a worker is a child of the step that dispatched it.
"""

from __future__ import annotations

from typing import Any, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from configs.schema import Settings

TRACER_NAME = "appliance"
TRACE_HEADERS = ("traceparent", "tracestate")
# The attribute every span of one request carries, so a trace is found by task id.
TASK_ID_ATTRIBUTE = "appliance.task_id"

_configured = False


def setup_tracing(settings: Settings, component: str) -> bool:
    """Install an OTLP-exporting tracer provider for this process, if configured.
    Returns whether tracing is on. Safe to call more than once."""
    global _configured
    endpoint = settings.observability.otlp_endpoint
    if not endpoint or _configured:
        return bool(endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": f"{settings.observability.service_name}-{component}"})
    provider = TracerProvider(resource=resource)
    # A short delay: worker children may be recycled soon after a task ends.
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"), schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def trace_headers() -> dict[str, str]:
    """The current span's context as message headers (empty when tracing is off)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, Any] | Any) -> Context:
    """The parent context carried by a message's headers (or a Celery request)."""
    carrier = {}
    for name in TRACE_HEADERS:
        value = headers.get(name) if isinstance(headers, Mapping) else getattr(headers, name, None)
        if isinstance(value, str):
            carrier[name] = value
    return propagate.extract(carrier)
