"""Helpers of the integration tests: events, reading topics and groups, waiting for results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from contracts.kafka import KafkaConnection
from projector.replay.topic import group_committed, partitions_of


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning (no group) until `expected` records or the timeout."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    return await group_committed(KafkaConnection(bootstrap_servers=bootstrap), topic, group)


async def end_offsets(bootstrap: str, topic: str, records: int) -> dict[int, int]:
    """One past the last offset of each partition, found by reading all `records`.

    Not `end_offsets()`: Tansu 0.6 answers ListOffsets(latest) with the last record
    *batch*'s base offset + 1, which is short of the end when a producer batched records.
    """
    ends: dict[int, int] = {}
    for record in await consume_all(bootstrap, topic, records):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s")
