"""`LenientConsumer`'s idle wait against the broker: a `getmany` that found nothing keeps
waiting and hands over a record produced meanwhile; a consumer stopped during the wait ends
it at once (tests/unit/test_idle_wait.py has the rules with a faked fetch)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ConsumerStoppedError

from devstack import create_topics
from projector.kafka.lenient import LenientConsumer

pytestmark = pytest.mark.integration

IDLE_WAIT_MS = 5_000
TIMEOUT_MS = 20  # FastStream's batch timeout, as the projector sets it


async def idle_consumer(bootstrap: str, topic: str) -> LenientConsumer:
    await create_topics(bootstrap, {topic: 1})
    consumer = LenientConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        idle_wait_ms=IDLE_WAIT_MS,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    return consumer


async def test_a_record_produced_during_the_wait_is_handed_over_by_the_same_call(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = f"idle.wait.{unique}"
    consumer = await idle_consumer(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        started = time.monotonic()
        waiting = asyncio.create_task(consumer.getmany(timeout_ms=TIMEOUT_MS))
        await asyncio.sleep(0.5)  # many timeouts of nothing
        assert not waiting.done()
        await producer.send_and_wait(topic, b"late", partition=0)
        fetched = await asyncio.wait_for(waiting, IDLE_WAIT_MS / 1000)
        assert [r.value for records in fetched.values() for r in records] == [b"late"]
        assert time.monotonic() - started < IDLE_WAIT_MS / 1000
    finally:
        await producer.stop()
        await consumer.stop()


async def test_stopping_the_consumer_ends_a_waiting_getmany(
    kafka_bootstrap: str, unique: str
) -> None:
    consumer = await idle_consumer(kafka_bootstrap, f"idle.stop.{unique}")
    waiting = asyncio.create_task(consumer.getmany(timeout_ms=TIMEOUT_MS))
    await asyncio.sleep(0.3)
    stopping = time.monotonic()
    await consumer.stop()
    with contextlib.suppress(ConsumerStoppedError):  # FastStream's loop returns on it
        assert await asyncio.wait_for(waiting, 2) == {}
    assert time.monotonic() - stopping < 2
