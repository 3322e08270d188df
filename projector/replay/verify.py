"""`replay verify --from A --to B`: compare two projection versions job by job.

Digests first: a Redis Function of this module returns, per job key, the SHA1 of its `h`,
`o` and `p` fields, so a job costs 40 bytes on the wire instead of its state, and only the
jobs whose digests differ are fetched whole (HGETALL), decoded and shown field by field.

- Pass 1 goes over A's keys (SCAN, batches of `BATCH` keys) and takes the digests of each
  job in A and in B in one pipelined round trip per batch: equal, different, or missing in B.
- Pass 2 goes over B's keys and takes the digest of each job in A: a job absent there is
  missing in A (the others were compared in pass 1).

A job whose partition has not been fully committed by either version's consumer group
(lag > 0 when the command starts) is reported apart, as in flight: its events are still being
projected, so a difference there is expected and is no failure. A job that changes while the
command runs, on a partition without lag at its start, shows as differing: run it again.

`--tenant T` restricts both passes to that tenant's keys (a SCAN pattern). `--sample N`
draws N of A's keys uniformly (reservoir sampling over the SCAN: every key name is read, only
N are kept) and compares those, and draws N of B's keys the same way and looks for them in A:
B's extras are sampled as well, each found with a probability of about N / |B|.

Memory is bounded by a batch of keys (or the N sampled keys): differing jobs are printed as
they are found, one line each with tenant and id, with a field-by-field diff for the first
`MAX_DETAILS` of them. Exit status: 0 when no job differs outside in-flight ones, else 1;
2 when `--tenant` is no tenant id or the topic does not exist (in-flight jobs cannot be told).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from contracts.events import TENANT_PATTERN
from contracts.job_state import decode_state, job_key, job_key_pattern, job_of_key
from contracts.redis_client import AnyRedis
from projector.fold import JobRef
from projector.redis_client import connect_redis
from projector.replay import topic, versions
from projector.replay.diff import differences
from projector.replay.progress import Progress
from projector.settings import ProjectorSettings
from projector.store import DIGEST_FUNCTION, load_functions

T = TypeVar("T")

BATCH = versions.SCAN_COUNT
# Keys per FCALL on one server: Redis serves nothing else while a call runs (about 11 us per
# key, most of it Lua's redis.call), so a call is kept to a couple of milliseconds.
KEYS_PER_CALL = 200
MAX_DETAILS = 50

MISSING_IN_A, MISSING_IN_B, FIELDS_DIFFER = "missing in A", "missing in B", "fields differ"


def call_groups(keys: list[str], cluster: bool) -> list[list[int]]:
    """Indices of `keys` per FCALL: chunks on one server; one group per slot on a cluster,
    where the keys of one call must share a slot."""
    if not cluster:
        return [
            list(range(start, min(start + KEYS_PER_CALL, len(keys))))
            for start in range(0, len(keys), KEYS_PER_CALL)
        ]
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_slot.setdefault(key_slot(key.encode()), []).append(index)
    return list(by_slot.values())


async def digests(redis: AnyRedis, keys: list[str]) -> list[bytes | None]:
    """The digest of each key (None: no such key), in one pipelined round trip."""
    groups = call_groups(keys, isinstance(redis, RedisCluster))
    pipe: Any = redis.pipeline(transaction=False)
    for group in groups:
        pipe.fcall(DIGEST_FUNCTION, len(group), *(keys[i] for i in group))
    replies: list[list[bytes | None]] = await pipe.execute(raise_on_error=True)
    found: list[bytes | None] = [None] * len(keys)
    for group, reply in zip(groups, replies, strict=True):
        for index, digest in zip(group, reply, strict=True):
            found[index] = digest
    return found


class Reservoir(Generic[T]):
    """A uniform sample of at most `size` items of a stream of unknown length (algorithm R):
    memory stays `size` items however long the stream."""

    def __init__(self, size: int, rng: random.Random | None = None) -> None:
        self.size = size
        self.items: list[T] = []
        self.seen = 0
        self._rng = rng or random.Random()

    def offer(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


async def sampled(batches: AsyncIterator[list[bytes]], size: int) -> list[bytes]:
    reservoir: Reservoir[bytes] = Reservoir(size)
    async for batch in batches:
        for key in batch:
            reservoir.offer(key)
    return reservoir.items


def chunks(keys: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(keys), BATCH):
        yield keys[start : start + BATCH]


def detail(fields_a: dict[str, str], fields_b: dict[str, str], names: tuple[str, str]) -> list[str]:
    """The field-by-field diff of two stored jobs; where a side does not decode, or both
    decode to the same state (only the encoding differs), the raw hash fields instead."""
    try:
        lines = differences(decode_state(fields_a), decode_state(fields_b), names)
    except ValueError as error:
        note = f"a side does not decode: {str(error).splitlines()[0]}"
    else:
        if lines:
            return lines
        note = "the stored values differ but decode to the same state"
    return [note] + [
        f"field {field}: {names[0]}={fields_a.get(field)!r} {names[1]}={fields_b.get(field)!r}"
        for field in sorted(fields_a.keys() | fields_b.keys())
        if fields_a.get(field) != fields_b.get(field)
    ]


@dataclass
class Tally:
    compared: int = 0
    equal: int = 0
    differing: int = 0
    in_flight: int = 0
    missing_in_a: int = 0
    missing_in_b: int = 0
    # Of those, the ones on partitions neither group lags on: missing for good.
    settled_missing_in_a: int = 0
    settled_missing_in_b: int = 0

    def count(self, kind: str, in_flight: bool) -> None:
        if in_flight:
            self.in_flight += 1
        else:
            self.differing += 1
        if kind == MISSING_IN_A:
            self.missing_in_a += 1
            self.settled_missing_in_a += not in_flight
        elif kind == MISSING_IN_B:
            self.missing_in_b += 1
            self.settled_missing_in_b += not in_flight

    def summary(self, seconds: float) -> str:
        rate = self.compared / max(seconds, 1e-9)
        return (
            f"{self.compared:,} jobs compared: {self.equal:,} equal, {self.differing:,} "
            f"differing, {self.in_flight:,} in flight ({self.missing_in_a:,} missing in A, "
            f"{self.missing_in_b:,} missing in B) in {seconds:.1f} s, {rate:,.0f} jobs/s"
        )


@dataclass(frozen=True)
class Lag:
    """The topic's partition count and the partitions either version's group still lags on."""

    partitions: int
    lagging: frozenset[int]

    def partition_in_flight(self, job_id: str) -> int | None:
        if not self.lagging:
            return None
        partition = topic.partition_for_key(job_id.encode(), self.partitions)
        return partition if partition in self.lagging else None


async def lag_of(settings: ProjectorSettings, names: tuple[str, str]) -> Lag:
    """Both groups' lag, printed where there is some; LookupError when the topic is absent."""
    groups = [f"{settings.kafka_group_id}.{name}" for name in names]
    lags = await asyncio.gather(
        *(topic.group_lag(settings.kafka, settings.kafka_topic, group) for group in groups)
    )
    for group, lag in zip(groups, lags, strict=True):
        behind = {partition: events for partition, events in lag.items() if events}
        if behind:
            shown = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(behind.items()))
            print(f"group {group} lags ({shown}): jobs there count as in flight")
    lagging = frozenset(p for lag in lags for p, events in lag.items() if events)
    return Lag(len(lags[0]), lagging)


class Comparison:
    """Compares batches of jobs between versions A and B, printing each difference."""

    def __init__(self, redis: AnyRedis, names: tuple[str, str], lag: Lag) -> None:
        self.redis = redis
        self.names = names
        self.lag = lag
        self.tally = Tally()
        self._detailed = 0
        self.undetailed = 0  # jobs with differing fields printed past MAX_DETAILS, without diff

    async def compare(self, keys_a: list[bytes]) -> None:
        """Pass 1: A's jobs against the same jobs in B."""
        refs = [job_of_key(key)[1:] for key in keys_a]
        found = await digests(self.redis, self._keys(refs, 0) + self._keys(refs, 1))
        found_a, found_b = found[: len(refs)], found[len(refs) :]
        for ref, digest_a, digest_b in zip(refs, found_a, found_b, strict=True):
            if digest_a is None:
                continue  # deleted from A since the scan returned it: pass 2 sees it in B
            self.tally.compared += 1
            if digest_a == digest_b:
                self.tally.equal += 1
            elif digest_b is None:
                await self._report(ref, MISSING_IN_B)
            else:
                await self._report(ref, FIELDS_DIFFER)

    async def find_extras(self, keys_b: list[bytes]) -> None:
        """Pass 2: B's jobs that A does not have (the others were compared in pass 1)."""
        refs = [job_of_key(key)[1:] for key in keys_b]
        for ref, digest_a in zip(refs, await digests(self.redis, self._keys(refs, 0)), strict=True):
            if digest_a is None:
                self.tally.compared += 1
                await self._report(ref, MISSING_IN_A)

    def _keys(self, refs: list[JobRef], side: int) -> list[str]:
        version = self.names[side]
        return [job_key(version, tenant, job_id) for tenant, job_id in refs]

    async def _report(self, ref: JobRef, kind: str) -> None:
        tenant, job_id = ref
        partition = self.lag.partition_in_flight(job_id)
        self.tally.count(kind, partition is not None)
        if partition is not None:
            print(
                f"IN FLIGHT tenant={tenant} id={job_id} partition={partition}: {self._label(kind)}"
            )
            return
        header = f"DIFFERS tenant={tenant} id={job_id}: {self._label(kind)}"
        if kind == FIELDS_DIFFER and self._detailed < MAX_DETAILS:
            self._detailed += 1
            lines = await self._detail(ref)
            print("\n".join([header, *(f"    {line}" for line in lines)]))
            return
        if kind == FIELDS_DIFFER:
            self.undetailed += 1
        print(header)

    def _label(self, kind: str) -> str:
        source, target = self.names
        return {MISSING_IN_A: f"{kind} ({source})", MISSING_IN_B: f"{kind} ({target})"}.get(
            kind, kind
        )

    async def _detail(self, ref: JobRef) -> list[str]:
        pipe: Any = self.redis.pipeline(transaction=False)
        for version in self.names:
            pipe.hgetall(job_key(version, *ref))
        raw_a, raw_b = await pipe.execute()
        fields_a = {versions.text(k): versions.text(v) for k, v in raw_a.items()}
        fields_b = {versions.text(k): versions.text(v) for k, v in raw_b.items()}
        return detail(fields_a, fields_b, self.names)


async def batches_of(
    redis: AnyRedis, pattern: str, sample: int | None, progress: Progress, row: str
) -> AsyncIterator[list[bytes]]:
    """The keys of a pass in batches: all of them, or a uniform sample of `sample`."""
    scan = versions.scan_keys(redis, pattern, BATCH)
    if sample is None:
        async for keys in scan:
            yield keys
        return
    keys_sampled = await sampled(scan, sample)
    progress.set_total(row, len(keys_sampled))
    for keys in chunks(keys_sampled):
        yield keys


async def run_passes(comparison: Comparison, tenant: str | None, sample: int | None) -> None:
    source, target = comparison.names
    progress = Progress("jobs")
    passes = (
        (f"{source} vs {target}", source, comparison.compare),
        (f"{target} not in {source}", target, comparison.find_extras),
    )
    try:
        for row, version, check in passes:
            progress.set_total(row, None)  # the row's clock starts with the pass
            pattern = job_key_pattern(version, tenant)
            async for keys in batches_of(comparison.redis, pattern, sample, progress, row):
                await check(keys)
                progress.advance(row, len(keys))
    finally:
        progress.close()


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    if args.tenant is not None and not re.fullmatch(TENANT_PATTERN, args.tenant):
        print(f"--tenant {args.tenant!r}: not a tenant id ({TENANT_PATTERN})", file=sys.stderr)
        return 2
    names: tuple[str, str] = (args.source, args.target)
    try:
        lag = await lag_of(settings, names)
    except LookupError as error:  # the topic does not exist
        print(f"KAFKA_TOPIC: {error}", file=sys.stderr)
        return 2
    comparison = Comparison(await connect_redis(settings.redis_url), names, lag)
    try:
        await load_functions(comparison.redis)
        started = time.monotonic()
        await run_passes(comparison, args.tenant, args.sample)
        seconds = time.monotonic() - started
        if args.tenant is None and args.sample is None:  # a whole comparison: promote reads it
            await record_missing(comparison)
    finally:
        await comparison.redis.aclose()
    return conclude(comparison, seconds)


async def record_missing(comparison: Comparison) -> None:
    """For `promote` and `rollback`: on each version, how many jobs of the other it misses."""
    tally, (source, target) = comparison.tally, comparison.names
    for version, other, missing in (
        (target, source, tally.settled_missing_in_b),
        (source, target, tally.settled_missing_in_a),
    ):
        await versions.record_meta(
            comparison.redis, version, verified_against=other, missing_jobs=str(missing)
        )


def conclude(comparison: Comparison, seconds: float) -> int:
    tally, (source, target) = comparison.tally, comparison.names
    if comparison.undetailed:
        print(
            f"... and {comparison.undetailed:,} more jobs with differing fields, "
            "listed without their diff"
        )
    print(f"{tally.summary(seconds)} (A = {source}, B = {target})")
    if tally.differing:
        print(f"{source} and {target} differ: {tally.differing:,} jobs (DIFFERS lines above)")
        return 1
    apart = f", apart from {tally.in_flight:,} jobs in flight" if tally.in_flight else ""
    print(f"{source} and {target} are equal{apart}")
    return 0
