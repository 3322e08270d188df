"""`replay build`: project the topic into a version from the beginning, up to (at least) the
end offsets taken at start, then exit with the group's offsets committed there.

It runs the live projector's batch pipeline (`projector.batch.BatchProjector`: validate once,
fold per job, one merge call per job, commit after Redis confirmed) on a consumer that is
assigned every partition by hand instead of joining the group: no join delay and no
rebalance, while the commits still land in group `<KAFKA_GROUP_ID>.<version>`, so
`PROJECTION_VERSION=<version> python -m projector run` continues live from where the build
stopped. Poison records are counted and skipped: the live projector dead-lettered them when
they arrived.
"""

from __future__ import annotations

import argparse
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from projector.batch import Backoff, BatchProjector, Record
from projector.redis_client import connect_redis
from projector.replay.progress import Progress
from projector.replay.topic import committed_offsets, end_offsets, open_consumer, partitions_of
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore, load_merge_function

log = logging.getLogger("projector.replay.build")


class SkippedPoison:
    """A dead-letter sink that only counts: a rebuild does not dead-letter records again."""

    def __init__(self) -> None:
        self.count = 0

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.count += 1


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    version: str = args.version
    group = f"{settings.kafka_group_id}.{version}"
    redis = await connect_redis(settings.redis_url)
    try:
        await load_merge_function(redis)
        async with open_consumer(settings.kafka_bootstrap_servers, group) as consumer:
            partitions = await partitions_of(consumer, settings.kafka_topic)
            consumer.assign(partitions)
            ends = await end_offsets(consumer, partitions)
            if args.from_beginning:
                starts = dict.fromkeys(partitions, 0)
            else:
                starts = await committed_offsets(consumer, partitions)
            print(f"building version {version} from {settings.kafka_topic} (group {group})")
            for tp in partitions:
                print(f"  partition {tp.partition}: offsets {starts[tp]} .. {ends[tp]}")
            poison = SkippedPoison()
            started = time.monotonic()
            events = await _project(
                consumer,
                BatchProjector(
                    ProjectionStore(redis, version).merge_packed,
                    poison,
                    Backoff(cap=settings.retry_backoff_max_seconds),
                ),
                starts,
                ends,
                settings.batch_max_records,
            )
            elapsed = time.monotonic() - started
    finally:
        await redis.aclose()
    rate = events / elapsed if elapsed > 0 else 0.0
    print(
        f"built {version}: {events:,} events ({poison.count:,} poison skipped) "
        f"in {elapsed:.1f} s, {rate:,.0f} events/s; group {group} committed at the end offsets"
    )
    return 0


async def _project(
    consumer: AIOKafkaConsumer,
    projector: BatchProjector,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    max_records: int,
) -> int:
    """Fetch and project until every partition is committed at its end offset; the events
    projected (a batch retried after an error counts once)."""
    progress = Progress("events")
    for tp, start in starts.items():
        consumer.seek(tp, start)
        progress.set_total(_row(tp), max(0, ends[tp] - start))
    pending = [tp for tp in starts if starts[tp] < ends[tp]]
    projected: dict[TopicPartition, int] = dict(starts)
    try:
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=500, max_records=max_records)
            records: list[Record] = []
            for tp, part in fetched.items():
                # Whole fetches, also past the end taken at start: Tansu reports an end short
                # of the last record batch, and what is past the end is projected by the live
                # projector anyway (merges are idempotent).
                records.extend(part)
                if part:
                    projected[tp] = max(projected[tp], part[-1].offset + 1)
                    progress.update(_row(tp), min(ends[tp], projected[tp]) - starts[tp])
            await projector.handle(records, consumer)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
            if not pending and not await projector.settle():
                pending = [tp for tp in starts if await consumer.position(tp) < ends[tp]]
    finally:
        await projector.close()
        progress.close()
    return sum(projected[tp] - starts[tp] for tp in starts)


def _row(tp: TopicPartition) -> str:
    return f"partition {tp.partition}"
