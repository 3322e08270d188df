"""Tracing, optional: the W3C `traceparent` producers send continues in the projector and the api.

Installed with the extra `otel` (`pip install jobs-read-model[otel]`, the image has it), and
switched on by the standard OpenTelemetry settings: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_TRACES_EXPORTER=otlp|console`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`... read by the SDK itself. Without them, or without the extra, the
processes have no tracer (`tracer_of` gives None) and pay nothing on their hot paths: nothing
parses a header or builds an attribute.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.trace import Link, NonRecordingSpan, Tracer, TracerProvider

log = logging.getLogger("contracts.tracing")

TRACEPARENT = "traceparent"


def configure_tracing(service_name: str) -> None:
    """Install the SDK's tracer provider when the OTEL settings ask for traces and the extra
    is installed; otherwise leave the no-op one."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    wanted = exporter not in ("", "none") or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if not wanted or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        log.warning("OTEL settings ask for traces, but the `otel` extra is not installed")
        return
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)


def tracer_of(name: str, provider: TracerProvider | None = None) -> Tracer | None:
    """A tracer from `provider` or the global one (`configure_tracing`); None when spans
    would not be recorded (OpenTelemetry's no-op provider): callers then skip tracing."""
    provider = provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider.get_tracer(name)


def context_of(traceparent: str | bytes | None) -> Context | None:
    """The remote context a `traceparent` header names; None without a valid one."""
    if not traceparent:
        return None
    text = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    context = extract({TRACEPARENT: text})
    span = trace.get_current_span(context)
    return context if span.get_span_context().is_valid else None


def link_to(traceparent: str | bytes | None) -> Link | None:
    """A link to the span a producer's `traceparent` names (a batch has many parents)."""
    context = context_of(traceparent)
    if context is None:
        return None
    span = trace.get_current_span(context)
    assert isinstance(span, NonRecordingSpan)
    return Link(span.get_span_context())
