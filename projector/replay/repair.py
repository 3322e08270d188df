"""`replay job`: recompute one job from the topic, show how Redis differs, and repair it.

Where its events are: CONTRACT §1 keys a record by the job id, so the default partitioner puts
a job on its key's partition. Ids are accepted in any case and stored upper-case, but a producer
keys with the id as it wrote it, and another case hashes to another partition: events the
projector merged into the job would then be missed, and the write would drop them. So the
partitions of the upper-case, the lower-case and the given form of `--id` are read (at most
three); a producer keying in mixed case is found when `--id` is given in that case. Records
whose key is the id in any case are kept; a record keyed otherwise breaks the contract and is
not looked at, unless `--scan-all-partitions` reads every record of every partition.

Never undo: writing replaces the stored job, so when Redis holds a group newer than the
recomputed one (by the fold's own ranks: `merge(stored, recomputed)` is not the recomputed
state), the job has events the read did not find - a producer that keyed them otherwise put
them on another partition. Nothing is written then (exit 3), and the differing fields are
printed. Writing asks on a terminal; `--yes` writes without asking.

How far: from the partition's start to the greater of its end offset and the live group's
committed offset, both taken *after* the stored hash was read. The hash holds only events the
projector had fetched, which lie below that end: Apache Kafka's high watermark, or Tansu's
short end that still names the last record batch (a fetch returns whole batches); the
committed offset is the floor on any broker. So the recomputed state holds every event the
projector merged, and writing it cannot lose one.

The write is a Redis Function (`job_replace_if_unchanged` of `projector/jobs.lua`) that
replaces the hash only while its h, o, p are still what was read, and announces the change as
the merge does. When the live projector
merged meanwhile, it refuses; the hash is read again, the topic read on from where it stopped,
and the write retried a few times.

Exit status: 0 equal or repaired; 1 different under --dry-run (so scripts detect drift), no
event found, a partition cut by retention, not confirmed, or a job that kept changing; 2 bad
input; 3 Redis holds newer data than the topic gave (nothing written).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.events import TENANT_PATTERN, ULID_PATTERN
from contracts.job_state import (
    GROUP_FIELDS,
    JobState,
    decode_state,
    encode_state,
    job_key,
    join_groups,
)
from contracts.redis_client import AnyRedis
from contracts.storage import StorageRules
from projector.dead_letter import one_line
from projector.event_fields import EventFields
from projector.fold import BatchFold, Rank, fold, head_rank, origin_rank
from projector.intake import Poison, Record, parse
from projector.redis_client import connect_redis
from projector.replay.confirm import confirmed
from projector.replay.diff import MAX_VALUE_CHARS, differences
from projector.replay.reading import StalledRead, read_up_to
from projector.replay.topic import (
    committed_offsets,
    end_offsets,
    open_consumer,
    partition_for_key,
    partitions_of,
)
from projector.replay.versions import active_version
from projector.settings import ProjectorSettings
from projector.store import REPLACE_FUNCTION, load_functions

MAX_ATTEMPTS = 5
EXIT_NEWER_IN_REDIS = 3
SHOWN_INVALID = 5
NAMES = ("redis", "topic")


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    job = job_to_repair(args.tenant, args.job_id, settings.storage_rules)
    if job is None:
        return 2
    job.any_key = args.scan_all_partitions
    job.retention_seconds = settings.job_retention_seconds
    redis = await connect_redis(settings.redis_url)
    try:
        version = args.version or await active_version(redis)
        print(f"job {job.tenant}/{job.job_id}, version {version}")
        if not args.dry_run:
            await load_functions(redis)
        group_id = f"{settings.kafka_group_id}.{version}"
        async with open_consumer(settings.kafka, group_id) as consumer:
            try:
                reader = await PartitionReader.open(
                    consumer, settings.kafka_topic, job.keys, args.scan_all_partitions
                )
            except LookupError as error:  # the topic does not exist
                print(f"KAFKA_TOPIC: {error}", file=sys.stderr)
                return 2
            return await _repair(redis, version, reader, job, args)
    except StalledRead as error:
        print(f"{error}; nothing written", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


@dataclass
class TopicJob:
    """One job as read so far from the topic: its events, and the records of its key that
    were skipped."""

    tenant: str
    job_id: str
    keys: list[bytes]  # the id upper-case first, then lower-case and as given
    storage: StorageRules
    events: list[EventFields] = field(default_factory=list)
    found: Counter[int] = field(default_factory=Counter)  # events per partition
    invalid: list[tuple[int, int, str]] = field(default_factory=list)  # partition, offset, why
    others: int = 0  # valid events of this key for another tenant (or another job)
    any_key: bool = False  # every record is looked at, whatever its key
    mis_keyed: int = 0  # events of this job under another key
    retention_seconds: int | None = None  # JOB_RETENTION_SECONDS, as the projector applies it

    def add(self, record: Record) -> None:
        keyed = record.key is not None and record.key.upper() == self.keys[0]
        if not keyed and not self.any_key:
            return
        event = parse(record, self.storage)
        if isinstance(event, Poison):
            if keyed:
                self.invalid.append((record.partition, record.offset, event.reason))
        elif event["tenant_id"] != self.tenant or event["job_id"] != self.job_id:
            self.others += keyed
        else:
            self.mis_keyed += not keyed
            self.events.append(event)
            self.found[record.partition] += 1

    def state(self) -> JobState:
        return fold(self.events)

    def expire_at(self) -> str:
        """When the rewritten key expires (unix time), as the projector's merge would set it;
        '' for never."""
        if self.retention_seconds is None or not self.events:
            return ""
        batch = BatchFold()
        for event in self.events:
            batch.add(event)
        return batch.expire_at(self.retention_seconds)[0]


def job_to_repair(tenant: str, given_id: str, storage: StorageRules) -> TopicJob | None:
    """The job to repair, or None (with a message) when the input cannot name one."""
    if not re.fullmatch(TENANT_PATTERN, tenant):
        print(f"--tenant {tenant!r}: not a tenant id ({TENANT_PATTERN})", file=sys.stderr)
        return None
    if not re.fullmatch(ULID_PATTERN, given_id):
        print(f"--id {given_id!r}: not a ULID (26 characters of base32)", file=sys.stderr)
        return None
    job_id = given_id.upper()
    keys = list(dict.fromkeys(form.encode() for form in (job_id, given_id.lower(), given_id)))
    return TopicJob(tenant, job_id, keys, storage)


class PartitionReader:
    """Reads the partitions of a job's keys from their start, a bit further on each call."""

    def __init__(
        self, consumer: AIOKafkaConsumer, partition_count: int, starts: dict[TopicPartition, int]
    ) -> None:
        self.consumer = consumer
        self.partition_count = partition_count  # of the topic
        self.starts = starts  # each read partition's first offset
        self.positions = dict(starts)

    @classmethod
    async def open(
        cls, consumer: AIOKafkaConsumer, topic: str, keys: list[bytes], every_partition: bool
    ) -> PartitionReader:
        partitions = await partitions_of(consumer, topic)
        count = len(partitions)
        read = (
            partitions
            if every_partition
            else [
                TopicPartition(topic, p)
                for p in sorted({partition_for_key(k, count) for k in keys})
            ]
        )
        consumer.assign(read)
        await consumer.seek_to_beginning(*read)
        return cls(consumer, count, {tp: await consumer.position(tp) for tp in read})

    @property
    def truncated(self) -> list[TopicPartition]:
        """Partitions that no longer start at 0: retention deleted their oldest events."""
        return [tp for tp, start in self.starts.items() if start > 0]

    async def read_on(self, job: TopicJob) -> None:
        """Read each partition up to the greater of its end offset and the live group's
        committed offset, taken now (see the module's docstring)."""
        partitions = list(self.starts)
        ends = await end_offsets(self.consumer, partitions)
        committed = await committed_offsets(self.consumer, partitions)
        targets = {tp: max(ends[tp], committed[tp]) for tp in partitions}
        async for records in read_up_to(self.consumer, targets):
            for record in records:
                job.add(record)
        for tp in partitions:
            self.positions[tp] = await self.consumer.position(tp)


async def _repair(
    redis: AnyRedis, version: str, reader: PartitionReader, job: TopicJob, args: argparse.Namespace
) -> int:
    key = job_key(version, job.tenant, job.job_id)
    for _ in range(MAX_ATTEMPTS):
        stored = await read_hash(redis, key)
        await reader.read_on(job)
        _print_found(reader, job)
        outcome = await _compare_and_write(redis, version, reader, job, stored, args)
        if outcome is not None:
            return outcome
        print("the job changed in Redis meanwhile (a live merge): reading it again")
    print(
        f"gave up after {MAX_ATTEMPTS} attempts: the job keeps changing in Redis; nothing written"
    )
    return 1


async def _compare_and_write(
    redis: AnyRedis,
    version: str,
    reader: PartitionReader,
    job: TopicJob,
    stored: dict[bytes, bytes],
    args: argparse.Namespace,
) -> int | None:
    """The exit status, or None when the hash changed since it was read."""
    if not job.events:
        print("no event of this job on the topic: nothing written")
        return 1
    state = job.state()
    lines = stored_differences(stored, state)
    if not lines:
        print("equal")
        return 0
    print("differs (redis = stored, topic = recomputed):")
    for line in lines:
        print(f"  {line}")
    newer = newer_groups(stored, state)
    if newer:
        print(
            f"redis holds a newer {', '.join(newer)} than the topic gave: events of this job are "
            "not on its key's partition: mis-keyed producer? (--scan-all-partitions looks for "
            "them)"
        )
    if args.dry_run:
        print("dry run: nothing written")
        return 1
    if newer:
        print("nothing written: the write would undo the newer data")
        return EXIT_NEWER_IN_REDIS
    if reader.truncated:
        cut = ", ".join(
            f"partition {tp.partition} at {reader.starts[tp]}" for tp in reader.truncated
        )
        print(f"the topic starts late ({cut}): it may miss events of this job; nothing written")
        return 1
    if not confirmed(f"replace job {job.tenant}/{job.job_id} in version {version}?", args.yes):
        return 1
    if not await replace_if_unchanged(
        redis, version, job.tenant, job.job_id, stored, state, job.expire_at()
    ):
        return None
    print("written: Redis now holds the recomputed state")
    return 0


def _print_found(reader: PartitionReader, job: TopicJob) -> None:
    for tp, start in reader.starts.items():
        print(
            f"partition {tp.partition} of {tp.topic} ({reader.partition_count} partitions): "
            f"offsets {start}..{reader.positions[tp]} read, {job.found[tp.partition]} events "
            "of this job"
        )
    if job.invalid:
        print(f"{len(job.invalid)} records of this key are not valid events (skipped):")
        for partition, offset, reason in job.invalid[:SHOWN_INVALID]:
            print(f"  partition {partition} offset {offset}: {one_line(reason)}")
    if job.others:
        print(f"{job.others} events of this key belong to another tenant or job (skipped)")
    if job.mis_keyed:
        print(
            f"{job.mis_keyed} events of this job were keyed otherwise (a mis-keyed producer): "
            "counted"
        )


async def read_hash(redis: AnyRedis, key: str) -> dict[bytes, bytes]:
    client: Any = redis
    fields: dict[bytes, bytes] = await client.hgetall(key)
    return fields


def stored_differences(stored: Mapping[bytes, bytes], recomputed: JobState) -> list[str]:
    """How the stored hash differs from the recomputed state, one line per field; empty when
    equal. A hash damaged beyond decoding is shown raw; fields beyond h, o, p are listed."""
    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in stored.items()}
    extra = [f"field {name!r}: only in redis" for name in sorted(text) if name not in GROUP_FIELDS]
    try:
        lines = differences(decode_state(text), recomputed, NAMES)
    except ValueError as error:  # a malformed group, or a public event that is not one
        encoded = encode_state(recomputed)
        lines = [f"redis does not decode: {one_line(str(error))}"] + [
            f"{name}: redis={_raw(text.get(name))} topic={_raw(encoded.get(name))}"
            for name in GROUP_FIELDS
            if text.get(name) != encoded.get(name)
        ]
    return lines + extra


def newer_groups(stored: Mapping[bytes, bytes], recomputed: JobState) -> list[str]:
    """The groups Redis holds from an event that ranks above the recomputed group's (the
    fold's order, by tag: an event the topic read did not give); none for a hash that does
    not decode. The same tag with other content - damage, or a twin - is not newer."""
    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in stored.items()}
    try:
        current = decode_state(text)
    except ValueError:
        return []
    tags: list[tuple[str, Rank | None, Rank | None]] = [
        ("head", _tag(head_rank, current.head), _tag(head_rank, recomputed.head)),
        ("origin", _tag(origin_rank, current.origin), _tag(origin_rank, recomputed.origin)),
        ("public event", _tag(head_rank, current.public), _tag(head_rank, recomputed.public)),
    ]
    return [
        name for name, kept, topic in tags if kept is not None and (topic is None or kept > topic)
    ]


def _tag(rank: Any, group: Any) -> Rank | None:
    """The (seq, event_id) part of a group's rank."""
    return None if group is None else rank(group)[:2]


def _raw(value: str | None) -> str:
    return "absent" if value is None else repr(value)[:MAX_VALUE_CHARS]


async def replace_if_unchanged(
    redis: AnyRedis,
    version: str,
    tenant: str,
    job_id: str,
    read: Mapping[bytes, bytes],
    state: JobState,
    expire_at: str = "",
) -> bool:
    """Replace the job's hash with `state` if it still is what `read` saw, and announce the
    change (payload: the new groups joined, as the merge announces them). `expire_at`: the
    unix time the key expires at ('' never: JOB_RETENTION_SECONDS). False: it changed."""
    values = chain.from_iterable(encode_state(state).items())
    as_read = (read.get(name.encode(), b"") for name in GROUP_FIELDS)
    client: Any = redis
    replaced = await client.fcall(
        REPLACE_FUNCTION,
        1,
        job_key(version, tenant, job_id),
        *as_read,
        join_groups(state),
        expire_at,
        *values,
    )
    return bool(replaced)
