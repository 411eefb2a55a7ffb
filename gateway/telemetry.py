"""Tracing with the OpenTelemetry SDK: spans for GraphQL operations, source calls and write
steps, exported over OTLP only when an endpoint is configured (nothing leaves by default).

The tracer provider is process-wide (OpenTelemetry's API is), so it is set up once, by the
first app the process builds; `tracer()` is what the rest of the code uses.

Spans leave the process, so they carry names, ids and codes, never values: a failure is
recorded by its type and code only, since an exception's message and stack quote the query
text, SQL or an input (`failed`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Iterator
from typing import Any

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
    """The gateway's tracer (one made before tracing is configured forwards to it after);
    its spans record a failure by type and code, never by message or stack trace."""
    return _ValueFreeTracer(trace.get_tracer("gatehouse"))


def failed(span: trace.Span, exc: BaseException) -> None:
    """Mark `span` failed by the exception's type and code: its message may quote values."""
    code = getattr(exc, "code", None)
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    span.set_status(trace.Status(trace.StatusCode.ERROR, code if isinstance(code, str) else kind))
    span.add_event("exception", {"exception.type": kind})


class _ValueFreeTracer(trace.Tracer):
    """A tracer whose spans never record an exception's message or stack trace."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        # The API's signature, passed through; only the two recording flags are forced.
        kwargs |= {"record_exception": False, "set_status_on_exception": False}
        return self._inner.start_span(*args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's, passed through
        self, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        kwargs |= {"record_exception": False, "set_status_on_exception": False}
        with self._inner.start_as_current_span(*args, **kwargs) as span:
            try:
                yield span
            except Exception as exc:
                failed(span, exc)
                raise


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits; a fresh random one outside any span."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return trace.format_trace_id(context.trace_id)
    return uuid.uuid4().hex
