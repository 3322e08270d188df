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
from aiokafka.errors import CommitFailedError

from projector.batch import Backoff, BatchProjector, Record, tune_garbage_collector
from projector.redis_client import connect_redis
from projector.replay.progress import Progress
from projector.replay.topic import committed_offsets, end_offsets, open_consumer, partitions_of
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore, load_merge_function
from projector.undecodable import getmany

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
    """The consumer's commit and seek for `BatchProjector`, remembering a refused commit:
    the projector retries every failure as transient, but a group with live members refuses
    a commit from outside it every time."""

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
            tune_garbage_collector()
            started = time.monotonic()
            try:
                events, rate = await _project(
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
    projector: BatchProjector,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    max_records: int,
) -> tuple[int, float]:
    """Fetch and project until every partition is committed at its end offset. Returns the
    events projected (a batch retried after an error counts once) and the events/s from the
    first fetch to the last commit (connecting and the first fetch excluded, as the live
    projector's rate excludes its group join)."""
    offsets = GroupOffsets(consumer)
    progress = Progress("events")
    for tp, start in starts.items():
        consumer.seek(tp, start)
        progress.set_total(_row(tp), max(0, ends[tp] - start))
    pending = list(starts)  # each until its end is confirmed by a fetch response, and reached
    projected: dict[TopicPartition, int] = dict(starts)
    first_fetch: float | None = None
    before_window = 0
    confirmed: set[TopicPartition] = set()
    try:
        while pending:
            # Records aiokafka cannot decode come as poison instead of failing the build.
            fetched = await getmany(consumer, *pending, timeout_ms=500, max_records=max_records)
            _confirm_ends(consumer, pending, ends, confirmed, progress, starts)
            if first_fetch is None and fetched:
                first_fetch = time.monotonic()
                before_window = sum(len(part) for part in fetched.values())
            records: list[Record] = []
            for tp, part in fetched.items():
                # Whole fetches, also past the end: what is past it is projected by the live
                # projector anyway (merges are idempotent).
                records.extend(part)
                if part:
                    projected[tp] = max(projected[tp], part[-1].offset + 1)
                    progress.update(_row(tp), min(ends[tp], projected[tp]) - starts[tp])
            await projector.handle(records, offsets)
            pending = [
                tp
                for tp in pending
                if tp not in confirmed or await consumer.position(tp) < ends[tp]
            ]
            if not pending and not await projector.settle():
                pending = [tp for tp in starts if await consumer.position(tp) < ends[tp]]
            if offsets.refused:
                raise GroupInUse()
    finally:
        await projector.close()
        progress.close()
    elapsed = 0.0 if first_fetch is None else time.monotonic() - first_fetch
    events = sum(projected[tp] - starts[tp] for tp in starts)
    return events, (events - before_window) / elapsed if elapsed > 0 else 0.0


def _confirm_ends(
    consumer: AIOKafkaConsumer,
    pending: list[TopicPartition],
    ends: dict[TopicPartition, int],
    confirmed: set[TopicPartition],
    progress: Progress,
    starts: dict[TopicPartition, int],
) -> None:
    """Raise each partition's end to the high watermark of its first fetch response.

    ListOffsets can fall short: Tansu answers one past the base offset of the last record
    batch. Fetch responses carry the true high watermark; the first one seen is the end as
    it was at start (later ones include what arrived since, the live projector's part)."""
    for tp in pending:
        if tp in confirmed:
            continue
        highwater = consumer.highwater(tp)
        if highwater is not None:
            ends[tp] = max(ends[tp], highwater)
            progress.set_total(_row(tp), max(0, ends[tp] - starts[tp]))
            confirmed.add(tp)


def _row(tp: TopicPartition) -> str:
    return f"partition {tp.partition}"
