"""The projector process: a FastStream batch subscriber built by a factory.

Resources (Redis, the dead-letter producer) open in the lifespan; nothing connects at import
time. The app is an `AsgiFastStream`: uvicorn serves its health and metrics routes
(`projector.http`) and runs the consumer through the ASGI lifespan.

The subscriber takes raw records (a parser of our own: FastStream's default would decode
every header and body before we see it, and fail the batch on bytes that are not UTF-8) and
acknowledges manually: `BatchProjector.handle` commits or rewinds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.message import FakeConsumer

from contracts.redis_client import AnyRedis
from projector.batch import Backoff, BatchProjector, Record
from projector.http import health_routes
from projector.metrics import ProjectorMetrics, consumer_of
from projector.redis_client import connect_redis
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore, load_merge_function
from projector.undecodable import consume_leniently

log = logging.getLogger("projector")


class KafkaDeadLetters:
    """Sends dead letters to `<topic>.dlq` and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        try:
            delivered = await self._producer.send(
                self._topic, value=value, key=key, headers=headers
            )
        except MessageSizeTooLargeError:
            # Too large to dead-letter as it is (e.g. a compressed poison record of megabytes):
            # retrying would stall the stream forever. Keep the key and the reason, say so.
            size = len(value or b"")
            note = [("dlq.value_dropped", f"{size} bytes, too large for {self._topic}".encode())]
            # A record needs a key or a value: a keyless one keeps an empty value.
            delivered = await self._producer.send(
                self._topic, value=None if key else b"", key=key, headers=[*headers, *note]
            )
        await delivered


class _Late:
    """Filled in by the lifespan: the handler is registered before resources exist."""

    projector: BatchProjector | None = None
    redis: AnyRedis | None = None


def create_app(
    settings: ProjectorSettings, metrics: ProjectorMetrics | None = None
) -> AsgiFastStream:
    broker = KafkaBroker(settings.kafka_bootstrap_servers, logger=log, log_level=logging.DEBUG)
    consume_leniently(broker)  # records aiokafka cannot decode become poison, not a stall
    late = _Late()
    metrics = metrics or ProjectorMetrics()

    subscriber = broker.subscriber(
        settings.kafka_topic,
        batch=True,
        group_id=settings.group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        parser=_raw_batch,
        decoder=_no_body,
    )

    @subscriber
    async def project(message: KafkaMessage) -> None:
        records: Sequence[Record] = message.raw_message
        assert late.projector is not None
        consumer: Any = subscriber.consumer
        await late.projector.handle(records, consumer)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        redis = late.redis = await connect_redis(settings.redis_url)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=settings.kafka_idempotent_producer,
            acks="all",
        )
        try:
            await load_merge_function(redis)
            await producer.start()
            store = ProjectionStore(redis, settings.projection_version)
            late.projector = BatchProjector(
                store.merge_packed,
                KafkaDeadLetters(producer, settings.dlq_topic),
                Backoff(cap=settings.retry_backoff_max_seconds),
                metrics,
            )
            log.info(
                "projecting %s into version %s (group %s)",
                settings.kafka_topic,
                settings.projection_version,
                settings.group_id,
            )
            yield
        finally:
            if late.projector is not None:
                await late.projector.close()
            await producer.stop()
            await redis.aclose()

    async def redis_answers() -> bool:
        return late.redis is not None and bool(await late.redis.ping())

    async def broker_answers() -> bool:
        return bool(await broker.ping(timeout=1.0))

    async def partitions_assigned() -> bool:
        consumer = consumer_of(subscriber)
        return consumer is not None and bool(consumer.assignment())

    routes = health_routes(
        {"broker": broker_answers, "redis": redis_answers, "assignment": partitions_assigned},
        metrics,
        lambda: consumer_of(subscriber),
    )
    return AsgiFastStream(broker, asgi_routes=routes, lifespan=lifespan, logger=log)


async def _raw_batch(records: tuple[Record, ...]) -> KafkaMessage:
    # No consumer here: commits and seeks go through BatchProjector.
    return KafkaMessage(body=b"", raw_message=records, consumer=FakeConsumer())


async def _no_body(message: Any) -> None:
    return None
