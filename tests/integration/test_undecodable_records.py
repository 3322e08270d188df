"""Records that aiokafka cannot decode, through the real broker: nothing stalls, nothing is lost.

A header key is a protocol String, but the broker keeps whatever bytes a producer wrote; aiokafka
decodes header keys strictly while it unpacks a fetch. The records here are sent as raw record
batches (aiokafka's producer only takes `str` header keys), in the middle of a partition and
among valid events of the same batch. The projector and `replay build` must project every valid
event, dead-letter (or, for the build, skip) each undecodable record once, and commit the end
of every partition.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.publisher import encode_event
from devstack import create_topics
from devstack.data import event
from devstack.processes import LocalProcess
from projector.kafka.lenient import LenientConsumer, getmany
from projector.kafka.records import UndecodableRecord
from tests.integration.projection import (
    assert_projection_equals_fold,
    job_events,
    produce,
    projector_env,
)
from tests.integration.projection import spawn as spawn_projector
from tests.integration.support import committed_offsets, consume_all, eventually
from tests.integration.test_replay import ok, replay
from tests.unit.test_undecodable import RawHeader, RawRecord, encode_batch

pytestmark = pytest.mark.integration

BAD_KEY = b"\xff\xfe-not-utf-8"
BAD_PARTITION = 1  # a batch with valid events on both sides of an undecodable record
FIRST_BAD_PARTITION = 2  # an undecodable record first on its partition, alone in its batch


@dataclass(frozen=True)
class Undecodable:
    """An undecodable record as produced, and where the broker put it."""

    key: bytes | None
    value: bytes | None
    headers: list[RawHeader]
    partition: int = -1
    offset: int = -1

    def record(self) -> tuple[bytes | None, bytes | None, list[RawHeader]]:
        return self.key, self.value, self.headers

    def at(self, partition: int, offset: int) -> Undecodable:
        return Undecodable(self.key, self.value, self.headers, partition, offset)


@dataclass
class Stream:
    valid: list[JobEvent] = field(default_factory=list)  # every event that must be projected
    bad: list[Undecodable] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)  # one past the last offset, per partition

    def placed(self, partition: int, offset: int) -> None:
        self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)


async def produce_events(bootstrap: str, topic: str, events: list[JobEvent], into: Stream) -> None:
    for placed in await produce(bootstrap, topic, events):
        into.placed(placed.partition, placed.offset)
    into.valid.extend(events)


async def produce_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Send one record batch as it is; its base offset in the partition."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(None, -1, 10_000, [(topic, [(partition, batch)])])
        response = await client.send(leader, request)
    finally:
        await client.close()
    ((_, ((_, error_code, base_offset, *_),)),) = response.topics
    assert error_code == 0, f"the broker refused the batch: error {error_code}"
    base: int = base_offset
    return base


async def produce_stream(bootstrap: str, topic: str) -> Stream:
    """Valid events on every partition, and two undecodable records among them."""
    stream = Stream()
    first_bad = Undecodable(None, b"{not json", [(b"\xc3\x28", None), (b"kind", b"x")])
    base = await produce_batch(
        bootstrap, topic, FIRST_BAD_PARTITION, encode_batch([first_bad.record()])
    )
    stream.bad.append(first_bad.at(FIRST_BAD_PARTITION, base))
    stream.placed(FIRST_BAD_PARTITION, base)

    await produce_events(bootstrap, topic, job_events(jobs=16), stream)

    inside = job_events(jobs=4, tenant_ids=("umbrella",))
    job = inside[0]
    # A valid event but for its header: applied, it would make the job FAILED.
    poisoned = encode_event(event(job_id=job.job_id, tenant_id=job.tenant_id, seq=9, kind="failed"))
    bad = Undecodable(job.job_id.encode(), poisoned, [(b"kind", b"failed"), (BAD_KEY, b"v")])
    half = len(inside) // 2
    records = [
        *(raw(e) for e in inside[:half]),
        bad.record(),
        *(raw(e) for e in inside[half:]),
    ]
    base = await produce_batch(bootstrap, topic, BAD_PARTITION, encode_batch(records))
    stream.bad.append(bad.at(BAD_PARTITION, base + half))
    stream.placed(BAD_PARTITION, base + len(records) - 1)
    stream.valid.extend(inside)

    await produce_events(bootstrap, topic, job_events(jobs=16, tenant_ids=("initech",)), stream)
    return stream


def raw(e: JobEvent) -> tuple[bytes, bytes, list[RawHeader]]:
    return e.job_id.encode(), encode_event(e), [(b"kind", e.kind.encode())]


async def wait_for_commits(
    bootstrap: str, topic: str, group: str, ends: dict[int, int], timeout: float
) -> None:
    async def committed_to_the_end() -> bool:
        committed = await committed_offsets(bootstrap, topic, group)
        return all(committed.get(partition) == end for partition, end in ends.items())

    await eventually(committed_to_the_end, timeout, f"group {group} committing {ends}")


def assert_dead_letters(
    letters: list[ConsumerRecord[bytes, bytes]], bad: list[Undecodable], topic: str
) -> None:
    assert len(letters) == len(bad), "each undecodable record is dead-lettered once"
    by_source = {(b.partition, b.offset): b for b in bad}
    for letter in letters:
        headers = list(letter.headers)
        added = dict(headers[-4:])
        where = (int(added["dlq.partition"] or b""), int(added["dlq.offset"] or b""))
        source = by_source.pop(where)
        assert letter.key == source.key, where
        assert letter.value == source.value, where
        # The original headers, a key that is not UTF-8 shown with its bytes escaped.
        assert headers[:-4] == [
            (name.decode("utf-8", "backslashreplace"), value) for name, value in source.headers
        ], where
        assert added["dlq.topic"] == topic.encode()
        reason = (added["dlq.reason"] or b"").decode()
        assert reason.startswith("headers:"), reason
        assert "not UTF-8" in reason, reason
    assert not by_source, f"not dead-lettered: {sorted(by_source)}"


def lines_about_decoding(log: str) -> list[str]:
    return [line for line in log.splitlines() if "decod" in line.lower()]


async def test_the_projector_dead_letters_undecodable_records_and_projects_the_rest(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    stream = await produce_stream(kafka_bootstrap, topic)
    group = f"jobs-projector.{version}"
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn_projector(env, tmp_path))

    await wait_for_commits(kafka_bootstrap, topic, group, stream.ends, timeout=60)

    await assert_projection_equals_fold(redis, version, stream.valid)
    # One more than expected: the read waits a little for any letter beyond them.
    letters = await consume_all(kafka_bootstrap, f"{topic}.dlq", len(stream.bad) + 1, timeout=5)
    assert_dead_letters(letters, stream.bad, topic)
    first = processes[0]
    assert first.process.poll() is None, "the projector is still running"
    log = first.log_path.read_text()
    about = lines_about_decoding(log)
    assert len(about) <= 2 * len(stream.bad), "\n".join(about[:10])
    # Unfixed, FastStream restarted the failing consume task thousands of times a second.
    assert len(log.splitlines()) < 200, "no flood of log lines"

    # Restarted, the projector continues after the committed offsets: no second dead letter.
    first.stop()
    processes.append(spawn_projector(env, tmp_path, "projector-restarted"))
    late = job_events(jobs=2, tenant_ids=("late",))
    await produce_events(kafka_bootstrap, topic, late, stream)
    await wait_for_commits(kafka_bootstrap, topic, group, stream.ends, timeout=60)
    await assert_projection_equals_fold(redis, version, stream.valid)
    again = await consume_all(kafka_bootstrap, f"{topic}.dlq", len(stream.bad) + 1, timeout=5)
    assert len(again) == len(stream.bad), "nothing dead-lettered twice"
    assert not lines_about_decoding(processes[-1].log_path.read_text())


async def test_replay_build_skips_undecodable_records_and_projects_the_rest(
    kafka_bootstrap: str, topic: str, redis_url: str, redis: Redis, version: str
) -> None:
    stream = await produce_stream(kafka_bootstrap, topic)
    env = projector_env(kafka_bootstrap, topic, redis_url, version)

    done = await asyncio.to_thread(replay, env, "build", "--version", version, "--from-beginning")

    out = ok(done)
    assert f"({len(stream.bad)} poison skipped)" in out
    await assert_projection_equals_fold(redis, version, stream.valid)
    committed = await committed_offsets(kafka_bootstrap, topic, f"jobs-projector.{version}")
    assert committed == {partition: stream.ends.get(partition, 0) for partition in committed}
    about = lines_about_decoding(done.stdout + done.stderr)
    assert len(about) <= 2 * len(stream.bad), "\n".join(about[:10])


# --- the consumer alone ----------------------------------------------------------------------


def numbered(partition: int, n: int) -> RawRecord:
    return f"{partition}-{n}".encode(), f"value {partition}-{n}".encode(), [(b"n", b"%d" % n)]


def undecodable(partition: int, n: int) -> RawRecord:
    key, value, _ = numbered(partition, n)
    return key, value, [(BAD_KEY + b"%d" % n, None)]


# Both partitions start with an undecodable record, so the first call of `getmany`, which
# waits on both, fails whichever comes first; partition 1 also has one inside a batch.
LAYOUT: dict[int, list[list[RawRecord]]] = {
    0: [[undecodable(0, 0)], [numbered(0, 1), numbered(0, 2), numbered(0, 3)]],
    1: [
        [undecodable(1, 0), numbered(1, 1)],
        [numbered(1, 2), undecodable(1, 3), numbered(1, 4), numbered(1, 5)],
        [numbered(1, 6)],
    ],
}


RECORDS = sum(len(batch) for batches in LAYOUT.values() for batch in batches)


@pytest.fixture
async def layout_topic(kafka_bootstrap: str, unique: str) -> str:
    name = f"undecodable.{unique}"
    await create_topics(kafka_bootstrap, {name: 2})
    for partition, batches in LAYOUT.items():
        for batch in batches:
            await produce_batch(kafka_bootstrap, name, partition, encode_batch(batch))
    return name


def expected_layout() -> dict[int, list[tuple[bytes | None, bool]]]:
    """Per partition, in offset order: each record's key, and whether it is undecodable."""
    return {
        partition: [
            (key, headers[0][0].startswith(BAD_KEY))
            for batch in batches
            for key, _, headers in batch
        ]
        for partition, batches in LAYOUT.items()
    }


@pytest.mark.parametrize("max_records", [None, 1, 3])
@pytest.mark.parametrize("lenient_consumer", [False, True], ids=["getmany", "LenientConsumer"])
async def test_getmany_hands_over_every_record_once_in_order(
    kafka_bootstrap: str, layout_topic: str, max_records: int | None, lenient_consumer: bool
) -> None:
    """The module's `getmany` on any consumer, and `LenientConsumer.getmany`: aiokafka's own
    until a record fails, then back to where the call started and the module's way."""
    kind = LenientConsumer if lenient_consumer else AIOKafkaConsumer
    consumer = kind(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(layout_topic, p) for p in LAYOUT]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: dict[int, list[ConsumerRecord[bytes, bytes]]] = {p: [] for p in LAYOUT}
        deadline = time.monotonic() + 30
        while sum(map(len, seen.values())) < RECORDS and time.monotonic() < deadline:
            if lenient_consumer:
                fetched = await consumer.getmany(timeout_ms=200, max_records=max_records)
            else:
                fetched = await getmany(consumer, timeout_ms=200, max_records=max_records)
            assert max_records is None or sum(map(len, fetched.values())) <= max_records
            for tp, records in fetched.items():
                seen[tp.partition].extend(records)
        assert {p: [r.offset for r in records] for p, records in seen.items()} == {
            p: list(range(len(records))) for p, records in expected_layout().items()
        }
        assert {
            p: [(r.key, type(r) is UndecodableRecord) for r in records]
            for p, records in seen.items()
        } == expected_layout()
    finally:
        await consumer.stop()


async def test_getone_of_a_lenient_consumer_hands_over_every_record(
    kafka_bootstrap: str, layout_topic: str
) -> None:
    consumer = LenientConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(layout_topic, p) for p in LAYOUT]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: dict[int, list[tuple[bytes | None, bool]]] = {p: [] for p in LAYOUT}
        for _ in range(RECORDS):
            record = await asyncio.wait_for(consumer.getone(), timeout=30)
            seen[record.partition].append((record.key, type(record) is UndecodableRecord))
        assert seen == expected_layout()
    finally:
        await consumer.stop()


@pytest.mark.parametrize("bad_partition", [0, 1])
async def test_records_drained_before_another_partition_fails_are_not_lost(
    kafka_bootstrap: str, unique: str, bad_partition: int
) -> None:
    """aiokafka drains partition after partition into one result; when a later one fails,
    the records of the earlier ones go with the error while their positions stay moved.
    `LenientConsumer` puts the positions back: every good record still comes, once."""
    topic = f"undecodable.drained.{unique}"
    await create_topics(kafka_bootstrap, {topic: 2})
    good = 1 - bad_partition
    await produce_batch(
        kafka_bootstrap, topic, good, encode_batch([numbered(good, n) for n in range(5)])
    )
    await produce_batch(
        kafka_bootstrap, topic, bad_partition, encode_batch([undecodable(bad_partition, 0)])
    )
    consumer = LenientConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        await asyncio.sleep(1.5)  # both partitions fetched: one call drains both
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + 30
        while len(seen) < 6 and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                seen.extend((tp.partition, r.offset) for r in records)
        assert sorted(seen) == sorted([(good, n) for n in range(5)] + [(bad_partition, 0)])
    finally:
        await consumer.stop()
