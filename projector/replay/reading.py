"""Reading partitions of the topic up to given offsets: the fetch of `replay build` and
`replay job`. What follows the fetch is the live projector's (`projector.intake.parse`, the
fold, and for a build the whole `projector.pipeline`).

Records aiokafka cannot decode come as `UndecodableRecord`s (`projector.kafka.lenient`), so
they are poison here as in the live projector, instead of stalling the read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from projector.intake import Record
from projector.kafka.lenient import getmany

FETCH_WAIT_MS = 500
STALL_SECONDS = 30.0  # no record for this long while short of a target: give up


class StalledRead(TimeoutError):
    """The broker returned nothing for `STALL_SECONDS` while partitions were short of their
    targets."""


async def read_up_to(
    consumer: AIOKafkaConsumer,
    targets: dict[TopicPartition, int],
    max_records: int | None = None,
) -> AsyncIterator[list[Record]]:
    """The records of the assigned partitions from their positions until each position has
    reached its target, one fetch at a time (whole fetches: records past a target come too).

    `targets` is raised in place to the high watermark of each partition's first fetch
    response: ListOffsets can fall short (Tansu answers one past the base offset of the last
    record batch), a fetch response carries the true end as it was then."""
    confirmed: set[TopicPartition] = set()

    async def short_of_target() -> list[TopicPartition]:
        # A partition stays until a fetch response confirmed its end, and it reached it.
        return [
            tp for tp in targets if tp not in confirmed or await consumer.position(tp) < targets[tp]
        ]

    pending = await short_of_target()
    last_record = time.monotonic()
    while pending:
        fetched = await getmany(
            consumer, *pending, timeout_ms=FETCH_WAIT_MS, max_records=max_records
        )
        for tp in pending:
            highwater = consumer.highwater(tp)
            if tp not in confirmed and highwater is not None:
                targets[tp] = max(targets[tp], highwater)
                confirmed.add(tp)
        records = [record for part in fetched.values() for record in part]
        if records:
            last_record = time.monotonic()
            yield records
        elif time.monotonic() - last_record > STALL_SECONDS:
            short = ", ".join(
                [
                    f"partition {tp.partition} at {await consumer.position(tp)} of {targets[tp]}"
                    for tp in pending
                ]
            )
            raise StalledRead(f"no record for {STALL_SECONDS:.0f} s ({short})")
        pending = await short_of_target()
