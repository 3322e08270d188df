"""Helpers of the integration tests: events, reading topics and groups, waiting for results."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from contracts.events import JobEvent
from projector.replay.topic import partitions_of

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_counter = itertools.count(1)

BASE_TIME = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def ulid(n: int | None = None) -> str:
    """A valid ULID, distinct per call (or per `n`), ordered by `n`."""
    n = next(_counter) if n is None else n
    digits = []
    for _ in range(16):
        n, d = divmod(n, 32)
        digits.append(CROCKFORD[d])
    return "01JDQ8Z3M4" + "".join(reversed(digits))


def event_dict(
    *,
    job_id: str = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2",
    tenant_id: str = "acme",
    seq: int = 1,
    kind: str = "created",
    visibility: str = "public",
    event_id: str | None = None,
    artifacts: list[dict[str, Any]] | None = None,
    payload: dict[str, Any] | None = None,
    message: str = "",
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id or ulid(),
        "tenant_id": tenant_id,
        "job_id": job_id,
        "job_type": "ON_MODEL_RENDER",
        "job_created_at": BASE_TIME.isoformat(),
        "seq": seq,
        "kind": kind,
        "visibility": visibility,
        "message": message or f"{kind} {seq}",
        "artifacts": artifacts or [],
        "payload": payload or {},
        "occurred_at": (BASE_TIME + timedelta(seconds=seq)).isoformat(),
    }


def event(**fields: Any) -> JobEvent:
    return JobEvent.model_validate(event_dict(**fields), strict=False)


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
    """A group's committed offsets, read without joining it (Tansu's admin API cannot)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topic)
        consumer.assign(partitions)
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in partitions}
    finally:
        await consumer.stop()


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
