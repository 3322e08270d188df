"""`replay build`: project the topic into a version from the beginning, up to (at least) the
end offsets taken at start, then exit with the group's offsets committed there.

It runs the live projector's pipeline (`projector.pipeline.Pipeline`: parse once, fold per
job, one merge call per job, commit after Redis confirmed) on a consumer that is
assigned every partition by hand instead of joining the group: no join delay and no
rebalance, while the commits still land in group `<KAFKA_GROUP_ID>.<version>`, so
`PROJECTION_VERSION=<version> python -m projector run` continues live from where the build
stopped. Poison records are counted and skipped: the live projector dead-lettered them when
they arrived.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from contracts.redis_client import AnyRedis
from projector.batch import tune_garbage_collector
from projector.pipeline import Backoff, Pipeline
from projector.redis_client import connect_redis
from projector.replay import versions
from projector.replay.progress import Progress
from projector.replay.reading import read_up_to
from projector.replay.topic import committed_offsets, end_offsets, open_consumer, partitions_of
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore, load_functions

log = logging.getLogger("projector.replay.build")


class SkippedPoison:
    """A dead-letter sink that only counts: a rebuild does not dead-letter records again."""

    def __init__(self) -> None:
        self.count = 0

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.count += 1


class GroupInUse(Exception):
    """The group refused our commits: it has members, a live projector of this version."""


class GroupOffsets:
    """The consumer's commit and seek for the `Pipeline`, remembering a refused commit: a
    group with live members refuses a commit from outside it every time."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.refused = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            self.refused = True
            raise

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(partition, offset)

    def pause(self, *partitions: TopicPartition) -> None:
        self._consumer.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._consumer.resume(*partitions)


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    version: str = args.version
    group = f"{settings.kafka_group_id}.{version}"
    redis = await connect_redis(settings.redis_url)
    try:
        await load_functions(redis)
        async with open_consumer(settings.kafka, group) as consumer:
            partitions = await partitions_of(consumer, settings.kafka_topic)
            consumer.assign(partitions)
            ends = await end_offsets(consumer, partitions)
            if args.from_beginning:
                starts = dict.fromkeys(partitions, 0)
            else:
                starts = await committed_offsets(consumer, partitions)
            print(f"building version {version} from {settings.kafka_topic} (group {group})")
            starts = await _mark_partial(redis, version, consumer, starts, args.from_beginning)
            for tp in partitions:
                print(f"  partition {tp.partition}: offsets {starts[tp]} .. {ends[tp]}")
            poison = SkippedPoison()
            tune_garbage_collector()
            started = time.monotonic()
            try:
                events, rate = await _project(
                    consumer,
                    Pipeline(
                        settings.storage_rules,
                        ProjectionStore(redis, version, settings.redis_min_replicas).merge_packed,
                        poison,
                        Backoff(cap=settings.retry_backoff_max_seconds),
                        retention_seconds=settings.job_retention_seconds,
                    ),
                    starts,
                    ends,
                    settings.batch_max_records,
                )
            except GroupInUse:
                print(
                    f"not built: group {group} has members (is a projector of version "
                    f"{version} running?); stop them, or build another version"
                )
                return 1
    finally:
        await redis.aclose()
    elapsed = time.monotonic() - started
    print(
        f"built {version}: {events:,} events ({poison.count:,} poison skipped) "
        f"in {elapsed:.1f} s, {rate:,.0f} events/s; group {group} committed at the end offsets"
    )
    return 0


async def _project(
    consumer: AIOKafkaConsumer,
    pipeline: Pipeline,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    max_records: int,
) -> tuple[int, float]:
    """Fetch and project until every partition is committed at its end offset. Returns the
    events projected and the events/s from the first fetch to the last commit (connecting and
    the first fetch excluded, as the live projector's rate excludes its group join)."""
    offsets = GroupOffsets(consumer)
    progress = Progress("events")
    for tp, start in starts.items():
        consumer.seek(tp, start)
        progress.set_total(_row(tp), max(0, ends[tp] - start))
    projected: dict[TopicPartition, int] = dict(starts)
    first_fetch: float | None = None
    before_window = 0
    try:
        # Whole fetches, also past the ends: what is past them is projected by the live
        # projector anyway (merges are idempotent).
        async for records in read_up_to(consumer, ends, max_records):
            if first_fetch is None:
                first_fetch = time.monotonic()
                before_window = len(records)
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                projected[tp] = max(projected[tp], record.offset + 1)
            for tp in starts:
                progress.set_total(_row(tp), max(0, ends[tp] - starts[tp]))
                progress.update(_row(tp), min(ends[tp], projected[tp]) - starts[tp])
            await pipeline.handle(records, offsets)
            if offsets.refused:
                raise GroupInUse()
        if not await pipeline.settle() or offsets.refused:
            raise GroupInUse()
    finally:
        await pipeline.close()
        progress.close()
    elapsed = 0.0 if first_fetch is None else time.monotonic() - first_fetch
    events = sum(projected[tp] - starts[tp] for tp in starts)
    return events, (events - before_window) / elapsed if elapsed > 0 else 0.0


async def _mark_partial(
    redis: AnyRedis,
    version: str,
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    from_beginning: bool,
) -> dict[TopicPartition, int]:
    """The offsets the build can start at. Where retention deleted events the build wanted
    (the log starts after them), say so loudly and record the version as partial: `promote`
    refuses it. A whole build from a complete topic clears the mark; any build clears the
    last `verify`'s findings, which spoke of other contents."""
    first = await log_start_offsets(consumer, list(starts))
    cut = {tp: first[tp] for tp in starts if first[tp] > starts[tp]}
    await versions.forget_meta(redis, version, "verified_against", "missing_jobs")
    if cut:
        shown = ", ".join(
            f"partition {tp.partition} starts at {o}" for tp, o in sorted(cut.items())
        )
        print(
            f"PARTIAL: the topic no longer holds every event ({shown}): retention deleted the "
            f"ones before. Version {version} misses the jobs they made; promote refuses it "
            "(--force overrides)."
        )
        partial = {str(tp.partition): offset for tp, offset in sorted(cut.items())}
        await versions.record_meta(redis, version, partial=json.dumps(partial))
    elif from_beginning:
        await versions.forget_meta(redis, version, "partial")
    return {tp: max(start, first[tp]) for tp, start in starts.items()}


async def log_start_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The first offset each partition still holds (above 0 once retention deleted some)."""
    first: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    return first


def _row(tp: TopicPartition) -> str:
    return f"partition {tp.partition}"
