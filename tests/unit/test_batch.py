"""The pipeline's failure policy, with in-memory fakes for Kafka and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, MessageSizeTooLargeError

import projector.pipeline as pipeline_module
from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from projector.dead_letter import KafkaDeadLetters
from projector.fold import JobRef
from projector.intake import Record
from projector.pipeline import Backoff, Pipeline


def record(offset: int, value: bytes | None, partition: int = 0) -> Record:
    headers = [("traceparent", b"00-abc")]
    return ConsumerRecord("jobs", partition, offset, 0, 0, b"k", value, None, 1, 1, headers)


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.paused: set[TopicPartition] = set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((key, value, headers))


class FakeStore:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.merged: list[list[JobRef]] = []

    async def merge(self, jobs: list[JobRef], packed: list[str]) -> list[int]:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis away")
        self.merged.append(jobs)
        return [1] * len(jobs)


def projector(store: FakeStore, sink: FakeSink) -> Pipeline:
    return Pipeline(STORAGE, store.merge, sink, Backoff(base=0.001, cap=0.002))


GOOD = encode_event(event(seq=1))


async def test_a_batch_is_committed_after_its_merge_and_its_dead_letters() -> None:
    store, sink, consumer = FakeStore(), FakeSink(), FakeConsumer()
    worker = projector(store, sink)
    await worker.handle([record(0, GOOD), record(1, b"{bad")], consumer)
    assert await worker.settle()
    assert consumer.commits == [{TopicPartition("jobs", 0): 2}]
    assert len(store.merged) == 1
    _key, value, headers = sink.sent[0]
    assert value == b"{bad"
    assert ("traceparent", b"00-abc") in headers, "the original headers are kept"
    assert dict(headers)["dlq.offset"] == b"1"


async def test_a_failed_merge_is_retried_on_a_timer_then_committed() -> None:
    store, sink, consumer = FakeStore(fail=3), FakeSink(), FakeConsumer()
    worker = projector(store, sink)
    await worker.handle([record(5, GOOD), record(6, GOOD)], consumer)
    # No further batch arrives: the batch retries by itself.
    assert await asyncio.wait_for(worker.settle(), timeout=5)
    assert store.fail == 0, "three failures, then the merge landed"
    assert consumer.commits == [{TopicPartition("jobs", 0): 7}]
    assert consumer.seeks == [], "nothing rewound: the batch kept its records"


async def test_the_batch_after_a_failing_one_is_not_committed_before_it() -> None:
    store, sink, consumer = FailingFirstMerges(2), FakeSink(), FakeConsumer()
    worker = projector(store, sink)
    await worker.handle([record(5, GOOD)], consumer)
    await worker.handle([record(6, GOOD), record(0, GOOD, partition=1)], consumer)
    assert await asyncio.wait_for(worker.settle(), timeout=5)
    assert consumer.commits == [
        {TopicPartition("jobs", 0): 6},
        {TopicPartition("jobs", 0): 7, TopicPartition("jobs", 1): 1},
    ], "in order, each after its merge"


class FailingFirstMerges(FakeStore):
    """Fails the first merges of the first batch only; later batches merge at once."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.first: list[JobRef] | None = None

    async def merge(self, jobs: list[JobRef], packed: list[str]) -> list[int]:
        self.first = jobs if self.first is None else self.first
        if jobs is self.first and self.failures:
            self.failures -= 1
            raise ConnectionError("redis away")
        return await super().merge(jobs, packed)


class FlakyCommits(FakeConsumer):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("coordinator away")
        await super().commit(offsets)


async def test_a_failed_commit_is_retried_on_a_timer() -> None:
    store, sink, consumer = FakeStore(), FakeSink(), FlakyCommits(failures=2)
    worker = projector(store, sink)
    await worker.handle([record(3, GOOD)], consumer)
    assert await asyncio.wait_for(worker.settle(), timeout=5)
    assert consumer.commits == [{TopicPartition("jobs", 0): 4}]


class RefusingCommits(FakeConsumer):
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise CommitFailedError("the group rebalanced")


async def test_a_refused_commit_is_not_retried_and_the_batch_is_left_to_the_partition_owner() -> (
    None
):
    store, sink, consumer = FakeStore(), FakeSink(), RefusingCommits()
    worker = projector(store, sink)
    await worker.handle([record(3, GOOD)], consumer)
    assert not await asyncio.wait_for(worker.settle(), timeout=5)
    assert consumer.commits == []


async def test_while_a_batch_retries_no_third_batch_is_taken() -> None:
    store, sink, consumer = FailingFirstMerges(10_000), FakeSink(), FakeConsumer()
    worker = projector(store, sink)
    await worker.handle([record(1, GOOD)], consumer)
    await worker.handle([record(2, GOOD)], consumer)
    third = asyncio.create_task(worker.handle([record(3, GOOD)], consumer))
    await asyncio.sleep(0.1)
    assert not third.done(), "the consumer waits while two batches are in flight"
    assert consumer.commits == []
    store.failures = 0
    await asyncio.wait_for(third, timeout=5)
    assert await asyncio.wait_for(worker.settle(), timeout=5)
    assert [c[TopicPartition("jobs", 0)] for c in consumer.commits] == [2, 3, 4]


class SlowFirstCommit(FakeConsumer):
    """Holds the first commit until `release` is set; later commits go through at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.held = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self.held:
            self.held = True
            await self.release.wait()
        await super().commit(offsets)


async def test_a_batch_is_merged_before_the_previous_commit_but_committed_after_it() -> None:
    store, sink, consumer = FakeStore(), FakeSink(), SlowFirstCommit()
    worker = projector(store, sink)
    await worker.handle([record(0, GOOD)], consumer)
    # Not held up by the first batch's commit:
    await asyncio.wait_for(worker.handle([record(1, GOOD)], consumer), timeout=5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(store.merged) == 2, "the second batch's merge did not wait for the first commit"
    assert consumer.commits == [], "the second batch's commit waits for the first one's"
    consumer.release.set()
    assert await worker.settle()
    assert consumer.commits == [{TopicPartition("jobs", 0): 1}, {TopicPartition("jobs", 0): 2}]


async def test_an_unexpected_error_while_preparing_rewinds_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(records: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline_module, "prepare_cooperatively", broken)
    consumer = FakeConsumer()
    await projector(FakeStore(), FakeSink()).handle([record(3, GOOD)], consumer)
    assert consumer.commits == []
    assert consumer.seeks == [(TopicPartition("jobs", 0), 3)]


class SizeLimitedProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        if record["value"] is not None and len(record["value"]) > 10:
            raise MessageSizeTooLargeError()
        self.sent.append(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_dead_letter_too_large_for_the_topic_is_sent_without_its_value() -> None:
    producer = SizeLimitedProducer()
    sink = KafkaDeadLetters(producer, "jobs.dlq")
    await sink.send(b"k", b"x" * 100, [("dlq.reason", b"payload too large")])
    (sent,) = producer.sent
    assert sent["value"] is None
    assert sent["key"] == b"k"
    assert dict(sent["headers"])["dlq.value_dropped"].startswith(b"100 bytes")


class DeadLetterTopicAway(FakeSink):
    """Refuses the dead letters of one partition until `open` is set."""

    def __init__(self, partition: int) -> None:
        super().__init__()
        self.partition = partition
        self.open = False
        self.refused = 0

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        if dict(headers)["dlq.partition"] == str(self.partition).encode() and not self.open:
            self.refused += 1
            raise ConnectionError("dead-letter topic cannot be written")
        await super().send(key, value, headers)


async def test_a_dead_letter_that_cannot_be_written_holds_only_its_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import projector.dead_letter_waits as waits

    monkeypatch.setattr(waits, "RETRY_BASE_SECONDS", 0.01)
    store, sink, consumer = FakeStore(), DeadLetterTopicAway(partition=1), FakeConsumer()
    worker = projector(store, sink)
    p0, p1 = TopicPartition("jobs", 0), TopicPartition("jobs", 1)
    batch = [
        record(10, GOOD, partition=0),
        record(11, b"{poison", partition=0),
        record(20, GOOD, partition=1),
        record(21, b"{poison", partition=1),
        record(22, GOOD, partition=1),
    ]
    await worker.handle(batch, consumer)
    assert await worker.settle()
    assert consumer.commits == [{p0: 12, p1: 21}], "partition 1 stops short of its poison"
    assert consumer.paused == {p1}
    assert (p1, 21) in consumer.seeks, "rewound to the poison record"
    assert set(worker.dead_letters.waiting) == {p1}
    # Partition 0 goes on while partition 1 waits.
    await worker.handle([record(12, GOOD, partition=0)], consumer)
    assert await worker.settle()
    assert consumer.commits[-1] == {p0: 13}
    sink.open = True  # the topic can be written again
    for _ in range(200):
        if not consumer.paused:
            break
        await asyncio.sleep(0.01)
    assert consumer.paused == set(), "resumed once the dead letter was written"
    assert worker.dead_letters.waiting == {}
    # The records from the poison on come again: the dead letter is not written twice.
    written_before = len(sink.sent)
    await worker.handle(
        [record(21, b"{poison", partition=1), record(22, GOOD, partition=1)], consumer
    )
    assert await worker.settle()
    assert consumer.commits[-1] == {p1: 23}
    assert len(sink.sent) == written_before
    values = [value for _key, value, _headers in sink.sent]
    assert values.count(b"{poison") == 2, "one dead letter per poison record"


class SlowDeadLetterTopicAway(DeadLetterTopicAway):
    """Takes a while to refuse, as a broker does: two batches in flight both meet it."""

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await asyncio.sleep(0.02)
        await super().send(key, value, headers)


async def _until_resumed(consumer: FakeConsumer) -> None:
    for _ in range(300):
        if not consumer.paused:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the partition was never resumed")


async def test_two_batches_in_flight_failing_on_one_partition_hold_it_at_the_first_poison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import projector.dead_letter_waits as waits

    monkeypatch.setattr(waits, "RETRY_BASE_SECONDS", 0.01)
    store, sink, consumer = FakeStore(), SlowDeadLetterTopicAway(partition=1), FakeConsumer()
    worker = projector(store, sink)
    p1 = TopicPartition("jobs", 1)
    await worker.handle([record(20, GOOD, 1), record(21, b"{first", 1)], consumer)
    await worker.handle([record(22, GOOD, 1), record(23, b"{second", 1)], consumer)
    assert await worker.settle()
    assert [commit[p1] for commit in consumer.commits] == [21, 21], "never past the first"
    assert list(worker.dead_letters.waiting) == [p1]
    sink.open = True
    await _until_resumed(consumer)
    values = [value for _key, value, _headers in sink.sent]
    assert sorted(v for v in values if v is not None and v != GOOD) == [b"{first", b"{second"]
    assert worker.dead_letters.waiting == {}


async def test_poison_of_a_waiting_partition_read_again_joins_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance lifts the pause: the partition's records come again past the waiting one.
    Their dead letters are written with it, and nothing is committed past one unwritten."""
    import projector.dead_letter_waits as waits

    monkeypatch.setattr(waits, "RETRY_BASE_SECONDS", 0.01)
    store, sink, consumer = FakeStore(), DeadLetterTopicAway(partition=1), FakeConsumer()
    worker = projector(store, sink)
    p1 = TopicPartition("jobs", 1)
    await worker.handle([record(20, b"{first", 1)], consumer)
    assert await worker.settle()
    await worker.handle([record(20, b"{first", 1), record(21, b"{later", 1)], consumer)
    assert await worker.settle()
    assert [commit[p1] for commit in consumer.commits] == [20, 20]
    sink.open = True
    await _until_resumed(consumer)
    values = [value for _key, value, _headers in sink.sent]
    assert sorted(v for v in values if v is not None) == [b"{first", b"{later"], "once each"
    await worker.handle([record(22, GOOD, 1)], consumer)
    assert await worker.settle()
    assert consumer.commits[-1] == {p1: 23}


async def test_a_merge_retried_does_not_write_its_dead_letters_again() -> None:
    store, sink, consumer = FakeStore(fail=3), FakeSink(), FakeConsumer()
    worker = projector(store, sink)
    await worker.handle([record(1, GOOD), record(2, b"{poison")], consumer)
    assert await worker.settle()
    assert [value for _key, value, _headers in sink.sent] == [b"{poison"]
    assert consumer.commits == [{TopicPartition("jobs", 0): 3}]
