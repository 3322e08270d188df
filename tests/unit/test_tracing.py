"""Traces continue through the projector: a span per batch linked to the producers' spans
(the SDK's in-memory exporter; the api's spans are in tests/integration/test_api.py)."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts.publisher import encode_event
from contracts.tracing import context_of, tracer_of
from devstack.data import STORAGE, event
from projector.intake import Record
from projector.pipeline import Backoff, Pipeline
from tests.unit.test_batch import FakeConsumer, FakeSink, FakeStore

TRACE_IDS = ["0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"]


def traced(offset: int, trace_id: str | None) -> Record:
    value = encode_event(event(seq=offset + 1))
    headers = (
        [] if trace_id is None else [("traceparent", f"00-{trace_id}-b7ad6b7169203331-01".encode())]
    )
    return ConsumerRecord("jobs", 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)


def in_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_a_batch_span_links_to_the_spans_of_the_producers_of_its_events() -> None:
    provider, exporter = in_memory()
    pipeline = Pipeline(STORAGE, FakeStore().merge, FakeSink(), Backoff(), tracer_provider=provider)
    records = [traced(0, TRACE_IDS[0]), traced(1, None), traced(2, TRACE_IDS[1])]
    await pipeline.handle(records, FakeConsumer())
    assert await pipeline.settle()
    (span,) = exporter.get_finished_spans()
    assert span.name == "projector batch"
    assert span.kind == trace.SpanKind.CONSUMER
    linked = sorted(f"{link.context.trace_id:032x}" for link in span.links)
    assert linked == sorted(TRACE_IDS)
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["projector.committed"] is True


def test_without_a_configured_provider_there_is_no_tracer_to_pay_for() -> None:
    assert tracer_of("projector.pipeline") is None  # the global no-op provider


def test_a_malformed_traceparent_continues_nothing() -> None:
    assert context_of("00-not-a-trace-01") is None
    assert context_of(None) is None
    assert context_of(f"00-{TRACE_IDS[0]}-b7ad6b7169203331-01") is not None
