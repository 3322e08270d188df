"""One consumer batch: validate, dead-letter, fold per job, merge into Redis, commit.

The failure policy lives here (STYLE rule 4):
- a record that breaks the contract is a value, not an exception: it goes to the dead-letter
  topic (original key and bytes, the reason in a header) and the batch goes on;
- offsets are committed only after the dead letters are acknowledged by the broker and
  every merge of the batch was confirmed by Redis: never past an event that is not in Redis;
- any error on the way (Redis down or frozen, broker trouble, a rebalance that fails the
  commit) rewinds every partition of the batch to its first offset and backs off
  (capped exponential) before the batch is fetched again. The merge is idempotent, so
  re-applying part of a batch is harmless. Nothing here ever stops the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from contracts.events import JobEvent
from projector.dead_letter import dead_letter_headers, one_line, poison_reason
from projector.event_fields import EventFields, fields_of, validate_event_fields_json
from projector.fold import BatchFold, JobRef
from projector.undecodable import UndecodableRecord

log = logging.getLogger("projector.batch")

Record: TypeAlias = ConsumerRecord[Any, Any]
# (jobs, their deltas: three values per job) -> groups written per job; raises when Redis
# did not confirm.
Merge = Callable[[list[JobRef], list[str]], Awaitable[list[int]]]


class OffsetControl(Protocol):
    """The part of the Kafka consumer a batch needs."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class DeadLetterSink(Protocol):
    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


@dataclass
class BatchOutcome:
    events: int = 0
    dead_lettered: int = 0
    # Events of the jobs whose merge changed nothing: redeliveries and superseded events.
    duplicates: int = 0
    jobs: int = 0
    jobs_changed: int = 0
    merged_at: float = 0.0  # wall clock when Redis confirmed the merges

    @property
    def applied(self) -> int:
        return self.events - self.dead_lettered - self.duplicates


class BatchObserver(Protocol):
    """Told of every committed batch (the metrics)."""

    def batch_committed(
        self,
        batch: PreparedBatch,
        outcome: BatchOutcome,
        seconds: float,
        offsets: dict[TopicPartition, int],
    ) -> None: ...


@dataclass
class Backoff:
    """Capped exponential backoff with jitter; reset by a success."""

    base: float = 0.1
    cap: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter

    def reset(self) -> None:
        self.attempt = 0


# JobEvent.model_validate_json without its Python wrapper.
_validate_json = JobEvent.__pydantic_validator__.validate_json


def validate(record: Record) -> JobEvent | str:
    """The record's event, or the reason it is poison."""
    if type(record) is UndecodableRecord:  # its headers broke the protocol, not its value
        return record.reason
    if record.value is None:
        return "value: no value (a tombstone is not an event)"
    try:
        event: JobEvent = _validate_json(record.value)
    except ValidationError as error:
        return poison_reason(error)
    return event


def validate_fields(record: Record) -> EventFields | str:
    """`validate`, with the event as its fields: the projector's verdict on one record
    (`_fold_records` runs the same steps inline)."""
    value = record.value
    if value is not None and type(record) is not UndecodableRecord:
        try:
            fields: EventFields = validate_event_fields_json(value)
        except ValidationError:
            pass
        else:
            return fields
    return _by_the_model(record)


def _by_the_model(record: Record) -> EventFields | str:
    """A record the fields validator refused, or that is not an event at all: the model
    words the reason. (Its errors are the same, but a value that is not a JSON object is "not
    a valid dictionary or instance of JobEvent" rather than "not a valid dictionary".)"""
    event = validate(record)
    return event if type(event) is str else fields_of(event)  # type: ignore[arg-type]


def first_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in first or record.offset < first[tp]:
            first[tp] = record.offset
    return first


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """What to commit: one past the last record of every partition in the batch."""
    last: dict[tuple[str, int], int] = {}  # plain tuples: a TopicPartition per record costs
    for record in records:
        where = (record.topic, record.partition)
        if record.offset >= last.get(where, -1):
            last[where] = record.offset
    return {
        TopicPartition(topic, partition): offset + 1 for (topic, partition), offset in last.items()
    }


@dataclass
class PreparedBatch:
    """A batch after the CPU work: its dead letters and its per-job deltas."""

    records: Sequence[Record]
    dead: list[tuple[Record, str]]
    jobs: list[JobRef]
    packed: list[str]  # the jobs' deltas, three values per job (`BatchFold.packed`)
    # Events per job index, for the jobs seen more than once (BatchFold.events_per_job).
    events_per_job: dict[int, int] = field(default_factory=dict)
    occurred_at: list[datetime] = field(default_factory=list)  # a sample, for the latency


# Events per batch whose occurred_at -> visible latency is observed.
LATENCY_SAMPLE = 16


def prepare(records: Sequence[Record]) -> PreparedBatch:
    """Validate every record once and fold the valid ones per job. Pure: never fails."""
    fold, dead = BatchFold(), list[tuple[Record, str]]()
    _fold_records(records, fold, dead)
    return _prepared(records, dead, fold, fold.packed()[1])


# Records validated (or jobs encoded) between two yields to the event loop in
# `prepare_cooperatively`: about 3-5 ms of work here.
RECORDS_PER_SLICE = 500


async def prepare_cooperatively(records: Sequence[Record]) -> PreparedBatch:
    """`prepare`, yielding to the event loop every few milliseconds: the previous batch's
    write (sending it, reading Redis's replies, committing) then progresses while this one
    is prepared. Without the yields it would wait, unsent, whenever the next batch comes
    from the consumer's buffer without a suspension (measured: 45k against 77k events/s)."""
    fold, dead = BatchFold(), list[tuple[Record, str]]()
    for start in range(0, len(records), RECORDS_PER_SLICE):
        _fold_records(records[start : start + RECORDS_PER_SLICE], fold, dead)
        await asyncio.sleep(0)
    packed: list[str] = []
    for part in fold.packed_slices(RECORDS_PER_SLICE):
        packed.extend(part)
        await asyncio.sleep(0)
    return _prepared(records, dead, fold, packed)


def _prepared(
    records: Sequence[Record], dead: list[tuple[Record, str]], fold: BatchFold, packed: list[str]
) -> PreparedBatch:
    return PreparedBatch(
        records,
        dead,
        fold.jobs(),
        packed,
        fold.events_per_job(),
        fold.occurred_at_sample(LATENCY_SAMPLE),
    )


def _fold_records(
    records: Sequence[Record], fold: BatchFold, dead: list[tuple[Record, str]]
) -> None:
    # `validate_fields` inlined for a valid record: this loop runs for every event.
    add, validate_json = fold.add, validate_event_fields_json
    for record in records:
        value = record.value
        if value is not None and type(record) is not UndecodableRecord:
            try:
                add(validate_json(value))
                continue
            except ValidationError:
                pass
        outcome = _by_the_model(record)
        if type(outcome) is str:
            dead.append((record, outcome))
        else:  # the model accepted what the fields validator refused: not expected
            add(outcome)  # type: ignore[arg-type]  # its fields


# Batches written at once. A batch's dead letters and merges go out as soon as it is
# prepared, while the batch before it may still be in Redis or committing: the projector
# waits for Redis only when it is two batches behind. With one batch in flight, waiting for
# the previous batch's merge took 4-10 % of the projector's time; two gave +6 % events/s.
WRITES_IN_FLIGHT = 2


@dataclass
class _Write:
    task: asyncio.Task[bool]  # True once the batch is committed
    records: Sequence[Record]
    consumer: OffsetControl


class BatchProjector:
    """Writes and commits batches in order, preparing each while earlier ones are written.

    Merges are idempotent and commute, so a batch's merges need not wait for the batch before
    it; its commit does, so commits stay in order. When a batch fails, the batches after it
    (fetched after it) are not committed either; once every one of them is done, all of
    their partitions are rewound to their first offsets and the projector backs off.
    """

    def __init__(
        self,
        merge: Merge,
        dead_letters: DeadLetterSink,
        backoff: Backoff,
        observer: BatchObserver | None = None,
    ) -> None:
        self._merge = merge
        self._dead_letters = dead_letters
        self._backoff = backoff
        self._observer = observer
        self._in_flight: deque[_Write] = deque()

    async def apply(self, batch: PreparedBatch) -> BatchOutcome:
        """Dead-letter the poison, then merge the rest. Raises on any I/O failure."""
        outcome = BatchOutcome(events=len(batch.records), dead_lettered=len(batch.dead))
        if batch.dead:
            await asyncio.gather(*(self._dead_letter(r, reason) for r, reason in batch.dead))
        changed = await self._merge(batch.jobs, batch.packed)
        outcome.merged_at = time.time()
        outcome.jobs = len(changed)
        unchanged = [index for index, groups in enumerate(changed) if not groups]
        outcome.jobs_changed = outcome.jobs - len(unchanged)
        counts = batch.events_per_job
        outcome.duplicates = sum(counts.get(index, 1) for index in unchanged)
        return outcome

    async def _dead_letter(self, record: Record, reason: str) -> None:
        log.warning(
            "poison record partition=%s offset=%s: %s",
            record.partition,
            record.offset,
            reason,
            extra={"partition": record.partition, "offset": record.offset},
        )
        headers = dead_letter_headers(reason, record.topic, record.partition, record.offset)
        await self._dead_letters.send(record.key, record.value, [*record.headers, *headers])

    async def handle(self, records: Sequence[Record], consumer: OffsetControl) -> None:
        """Prepare a batch and start writing it once fewer than WRITES_IN_FLIGHT earlier
        batches are in flight. Never raises (cancellation abandons the batches in flight
        uncommitted)."""
        if not records:
            return
        started = time.perf_counter()
        try:
            batch = await prepare_cooperatively(records)
        except Exception as error:  # a bug, not bad input: never skip past it
            log.exception("batch of %d records not prepared (%s); rewinding", len(records), error)
            await self._recover(consumer, records)
            return
        in_flight = self._in_flight
        while len(in_flight) >= WRITES_IN_FLIGHT:
            if not await in_flight[0].task:
                await self._recover(consumer, records)
                return
            in_flight.popleft()
        previous = in_flight[-1].task if in_flight else None
        task = asyncio.create_task(self._write_and_commit(batch, consumer, started, previous))
        in_flight.append(_Write(task, records, consumer))

    async def settle(self) -> bool:
        """Wait for every batch in flight; False when one failed (they were then rewound)."""
        while self._in_flight:
            oldest = self._in_flight[0]
            if not await oldest.task:
                await self._recover(oldest.consumer, ())
                return False
            self._in_flight.popleft()
        return True

    async def close(self) -> None:
        """Abandon the batches in flight, if any: they are not committed, so they come again."""
        while self._in_flight:
            task = self._in_flight.pop().task  # the latest first: it waits for the others
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _recover(self, consumer: OffsetControl, later: Sequence[Record]) -> None:
        """After a failure: wait for the batches in flight (none commits after the failed
        one), rewind the uncommitted ones and `later` to their first offsets, back off."""
        uncommitted: list[Record] = []
        while self._in_flight:
            write = self._in_flight.popleft()
            if not await write.task:
                uncommitted.extend(write.records)
        rewound = [*uncommitted, *later]
        rewind(consumer, rewound)
        delay = self._backoff.next_delay()
        log.warning("rewound %d records; retry in %.2f s", len(rewound), delay)
        await asyncio.sleep(delay)

    async def _write_and_commit(
        self,
        batch: PreparedBatch,
        consumer: OffsetControl,
        started: float,
        previous: asyncio.Task[bool] | None,
    ) -> bool:
        records = batch.records
        try:
            outcome = await self.apply(batch)
            if previous is not None and not await previous:
                return False  # an earlier batch failed: this one is rewound with it
            offsets = next_offsets(records)
            await consumer.commit(offsets)
        except Exception as error:
            log.warning(
                "batch of %d records not projected (%s)",
                len(records),
                one_line(f"{type(error).__name__}: {error}"),
            )
            return False
        self._backoff.reset()
        if self._observer is not None:
            self._observer.batch_committed(batch, outcome, time.perf_counter() - started, offsets)
        return True


def rewind(consumer: OffsetControl, records: Sequence[Record]) -> None:
    for tp, offset in first_offsets(records).items():
        try:
            consumer.seek(tp, offset)
        except Exception:  # revoked by a rebalance: its new owner starts from the commit
            log.info("partition %s no longer assigned; not rewound", tp)


def tune_garbage_collector() -> None:
    """A batch allocates thousands of short-lived, acyclic objects (events, dicts, strings)
    that reference counting frees; the cyclic collector, triggered every 700 allocations by
    default, kept re-scanning them and took about 40 % of the CPU per event (measured:
    11.5 against 20.1 us per event for validate + fold + encode). Collections stay on, rarer,
    and what start-up built is left out of them."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
