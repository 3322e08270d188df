"""What the broker knows about the topic and a projection's consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from contracts.kafka import KafkaConnection


@asynccontextmanager
async def open_consumer(
    kafka: KafkaConnection, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer that never joins a group (partitions are assigned by hand); with
    `group_id`, it can still read and commit that group's offsets."""
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, waiting briefly for metadata; an error when it does not exist."""
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise LookupError(f"topic {topic!r} not found (or it has no partitions)")


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """One past the last offset of each partition, as the broker reports it.

    Apache Kafka reports the high watermark. Tansu 0.6 (the local stack) reports one past the
    base offset of the last record *batch*, which falls short when producers batch records;
    the high watermark of a fetch response (`consumer.highwater`) is right on both.
    """
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return ends


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offsets (0 where it never committed); needs a `group_id`."""
    committed: dict[TopicPartition, int] = {}
    for tp in partitions:
        committed[tp] = (await consumer.committed(tp)) or 0
    return committed


async def group_lag(kafka: KafkaConnection, topic: str, group_id: str) -> dict[int, int]:
    """Events not yet committed by the group, per partition (never negative)."""
    async with open_consumer(kafka, group_id) as consumer:
        partitions = await partitions_of(consumer, topic)
        ends = await end_offsets(consumer, partitions)
        committed = await committed_offsets(consumer, partitions)
    return {tp.partition: max(0, ends[tp] - committed[tp]) for tp in partitions}


async def group_committed(kafka: KafkaConnection, topic: str, group_id: str) -> dict[int, int]:
    """The group's committed offset per partition (0 where it never committed), read
    without joining the group."""
    async with open_consumer(kafka, group_id) as consumer:
        partitions = await partitions_of(consumer, topic)
        committed = await committed_offsets(consumer, partitions)
    return {tp.partition: offset for tp, offset in committed.items()}


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the default partitioner (Java client, aiokafka) gives a keyed record."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
