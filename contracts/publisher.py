"""A typed publisher for worker services: validated events, keyed by job id.

The only module of `contracts` that does I/O. It serialises an event, validates the very
bytes it is about to send with the same model the projector uses (so a worker learns of a
contract break at its own call site, not from the dead-letter topic), keys the record by job
id (so a job's events stay on one partition, in order) and adds the informative headers.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer

from contracts.events import JobEvent
from contracts.kafka import KafkaSecurity

DEFAULT_TOPIC = "jobs.events"


def encode_event(event: JobEvent) -> bytes:
    """The wire bytes of an event, checked against the contract before they leave."""
    raw = event.model_dump_json().encode()
    JobEvent.model_validate_json(raw)  # raises pydantic.ValidationError on a broken event
    return raw


def event_headers(event: JobEvent, traceparent: str | None = None) -> list[tuple[str, bytes]]:
    headers = [("kind", event.kind.encode()), ("tenant_id", event.tenant_id.encode())]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return headers


class JobEventPublisher:
    """Publishes `JobEvent`s to the events topic.

    `security` says how to reach the brokers (TLS, SASL: `contracts.kafka.KafkaSecurity`).
    `idempotent` turns on the producer's idempotence (exactly one copy per send even across
    retries). Keep it on against Apache Kafka; turn it off for brokers without support for
    it (Tansu, used in the local stack). Duplicates are harmless either way: the projection
    is idempotent per (job, seq).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        idempotent: bool = True,
        security: KafkaSecurity | None = None,
        **producer_options: Any,
    ) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            enable_idempotence=idempotent,
            acks="all",
            **(security or KafkaSecurity()).client_options(),
            **producer_options,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def publish(self, event: JobEvent, *, traceparent: str | None = None) -> None:
        """Send one event and wait until the broker has acknowledged it."""
        await self._producer.send_and_wait(
            self.topic,
            value=encode_event(event),
            key=event.job_id.encode(),
            headers=event_headers(event, traceparent),
        )

    async def publish_many(self, events: Iterable[JobEvent]) -> None:
        """Send many events in the producer's batches; return when all are acknowledged."""
        futures = [
            await self._producer.send(
                self.topic,
                value=encode_event(event),
                key=event.job_id.encode(),
                headers=event_headers(event),
            )
            for event in events
        ]
        for future in futures:
            await future
