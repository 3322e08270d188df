"""The projector process: a FastStream batch subscriber built by a factory.

Resources (Redis, the dead-letter producer) open in the lifespan; nothing connects at import
time. The app is an `AsgiFastStream`: uvicorn serves its health and metrics routes
(`projector.http`) and runs the consumer through the ASGI lifespan.

The subscriber takes raw records (a parser of our own: FastStream's default would decode
every header and body before we see it, and fail the batch on bytes that are not UTF-8) and
acknowledges manually: `Pipeline.handle` writes and commits (`projector.pipeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.message import FakeConsumer

from contracts.pauses import watch_gc, watch_loop_lag
from contracts.redis_client import AnyRedis
from projector.dead_letter import KafkaDeadLetters
from projector.heartbeat import Heartbeat
from projector.http import health_routes
from projector.intake import Record
from projector.kafka.lenient import consume_leniently
from projector.kafka.security import faststream_security
from projector.metrics import ProjectorMetrics, consumer_of
from projector.pipeline import Backoff, Pipeline
from projector.redis_client import connect_redis
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore, load_functions

log = logging.getLogger("projector")

# How long one fetch of the consumer keeps waiting while nothing comes, before FastStream's
# loop gets control back (and sleeps BATCH_TIMEOUT_MS): see `projector.kafka.lenient`.
IDLE_WAIT_MS = 1_000


class _Late:
    """Filled in by the lifespan: the handler is registered before resources exist."""

    pipeline: Pipeline | None = None
    heartbeat: Heartbeat | None = None
    redis: AnyRedis | None = None


def create_app(
    settings: ProjectorSettings, metrics: ProjectorMetrics | None = None
) -> AsgiFastStream:
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=faststream_security(settings.kafka.security),
        logger=log,
        log_level=logging.DEBUG,
    )
    # Records aiokafka cannot decode become poison, not a stall; an empty fetch is not
    # followed by a sleep while records come at least once a second.
    consume_leniently(broker, idle_wait_ms=IDLE_WAIT_MS)
    late = _Late()
    metrics = metrics or ProjectorMetrics(
        version=settings.projection_version, group=settings.group_id
    )

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
        metrics.batch_handed_over(records)
        assert late.pipeline is not None
        consumer: Any = subscriber.consumer
        await late.pipeline.handle(records, consumer)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        unwatch_gc = watch_gc(metrics.gc_paused)
        loop_lag = asyncio.create_task(watch_loop_lag(metrics.loop_lagged))
        try:
            async with _resources():
                yield
        finally:
            loop_lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_lag
            unwatch_gc()

    @asynccontextmanager
    async def _resources() -> AsyncIterator[None]:
        redis = late.redis = await connect_redis(settings.redis_url)
        producer = AIOKafkaProducer(
            **settings.kafka.client_options(),
            enable_idempotence=settings.kafka_idempotent_producer,
            acks="all",
        )
        try:
            await load_functions(redis)
            await producer.start()
            heartbeat = late.heartbeat = Heartbeat(
                redis, settings.projection_version, settings.group_id
            )
            heartbeat.start()
            store = ProjectionStore(redis, settings.projection_version, settings.redis_min_replicas)
            pipeline = late.pipeline = Pipeline(
                settings.storage_rules,
                store.merge_packed,
                KafkaDeadLetters(producer, settings.dlq_topic),
                Backoff(cap=settings.retry_backoff_max_seconds),
                metrics,
                settings.job_retention_seconds,
            )
            metrics.retrying_batches.set_function(lambda: pipeline.retrying_batches)
            metrics.paused_partitions.set_function(lambda: len(pipeline.dead_letters.waiting))
            log.info(
                "projecting %s into version %s (group %s)",
                settings.kafka_topic,
                settings.projection_version,
                settings.group_id,
            )
            yield
        finally:
            if late.pipeline is not None:
                await late.pipeline.close()
            if late.heartbeat is not None:
                await late.heartbeat.stop()
            await producer.stop()
            await redis.aclose()

    async def redis_answers() -> str | None:
        answered = late.redis is not None and bool(await late.redis.ping())
        return None if answered else "Redis does not answer"

    async def broker_answers() -> str | None:
        return None if await broker.ping(timeout=1.0) else "no Kafka broker answers"

    async def writes_go_through() -> str | None:
        return None if late.pipeline is None else late.pipeline.retrying

    async def dead_letters_written() -> str | None:
        waiting = late.pipeline.dead_letters.waiting if late.pipeline else {}
        if not waiting:
            return None
        return "; ".join(
            f"partition {tp.partition} waits: its dead letter cannot be written ({reason})"
            for tp, reason in sorted(waiting.items())
        )

    routes = health_routes(
        {
            "broker": broker_answers,
            "redis": redis_answers,
            "writes": writes_go_through,
            "dead_letters": dead_letters_written,
        },
        metrics,
        lambda: consumer_of(subscriber),
    )
    return AsgiFastStream(broker, asgi_routes=routes, lifespan=lifespan, logger=log)


async def _raw_batch(records: tuple[Record, ...]) -> KafkaMessage:
    # No consumer here: commits and seeks go through the Pipeline.
    return KafkaMessage(body=b"", raw_message=records, consumer=FakeConsumer())


async def _no_body(message: Any) -> None:
    return None
