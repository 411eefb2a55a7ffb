"""Tracing with the OpenTelemetry SDK: spans for GraphQL operations, source calls and write
steps, exported over OTLP only when an endpoint is configured (nothing leaves by default).

The tracer provider is process-wide (OpenTelemetry's API is), so it is set up once, by the
first app the process builds; `tracer()` is what the rest of the code uses.
"""

from __future__ import annotations

import functools
import threading
import uuid

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_lock = threading.Lock()
_provider: TracerProvider | None = None


def configure_tracing(*, otlp_endpoint: str | None) -> TracerProvider:
    """The process's tracer provider, created on first use; OTLP export if configured."""
    global _provider
    with _lock:
        if _provider is None:
            _provider = TracerProvider(resource=Resource.create({"service.name": "gatehouse"}))
            trace.set_tracer_provider(_provider)
        if otlp_endpoint:
            _add_otlp(_provider, otlp_endpoint)
        return _provider


_exporting: set[str] = set()


def _add_otlp(provider: TracerProvider, endpoint: str) -> None:
    if endpoint in _exporting:
        return
    # Imported here: the exporter is only needed, and only loaded, when one is configured.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _exporting.add(endpoint)


def add_processor(processor: SpanProcessor) -> None:
    """Send spans to one more processor (tests use an in-memory exporter)."""
    configure_tracing(otlp_endpoint=None).add_span_processor(processor)


@functools.cache
def tracer() -> trace.Tracer:
    """The gateway's tracer (one made before tracing is configured forwards to it after)."""
    return trace.get_tracer("gatehouse")


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits; a fresh random one outside any span."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return trace.format_trace_id(context.trace_id)
    return uuid.uuid4().hex
