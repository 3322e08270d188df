"""Records to a committed merge: the one path of the live projector and `replay build`.

Whoever fetches the records (FastStream's subscriber, the build's own consumer) hands each
batch to `Pipeline.handle`; from there on the path is the same. The failure policy lives here
(STYLE rule 4):

- a record that breaks the contract is a value, not an exception: it goes to the dead-letter
  topic (original key, bytes and headers, the reason in a header) and the batch goes on; when
  the dead letter cannot be written, its partition alone waits (`projector.dead_letter_waits`);
- a batch's offsets are committed only after its dead letters are acknowledged by the broker,
  every merge of it was confirmed by Redis, and the batch before it was committed: never past
  an event that is not in Redis, nor past a poison record whose dead letter is not written;
- a failed merge (Redis down or frozen) or a failed commit is retried by the batch itself on
  a timer (capped exponential backoff with jitter), with or
  without further traffic. Two batches are in flight at most, so while one retries the
  consumer waits instead of fetching ahead;
- a commit the group refuses (a rebalance gave the partition to another member, or the group
  is not ours) is not retried: the partition is read again from its committed offset by
  whoever owns it now (aiokafka resets every position on an assignment). The merges are
  idempotent, so the batch's writes already in Redis do no harm;
- an unexpected error while preparing a batch (a bug, not bad input) rewinds its partitions
  and backs off. Nothing here ever stops the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from contracts.storage import StorageRules
from contracts.tracing import TRACEPARENT, link_to, tracer_of
from projector.batch import PreparedBatch, first_offsets, next_offsets, prepare_cooperatively
from projector.dead_letter import one_line
from projector.dead_letter_waits import (
    DeadLetterObserver,
    DeadLetters,
    DeadLetterSink,
    PartitionControl,
)
from projector.fold import JobRef
from projector.intake import Record

log = logging.getLogger("projector.pipeline")

T = TypeVar("T")


class Merge(Protocol):
    """(jobs, their deltas: three values per job[, when each expires]) -> groups written per
    job; raises when Redis did not confirm (`ProjectionStore.merge_packed`)."""

    def __call__(self, jobs: list[JobRef], values: list[str], /) -> Awaitable[list[int]]: ...


# Commits that are refused rather than failed: retrying cannot make them succeed.
REFUSED_COMMITS = (CommitFailedError, IllegalStateError)
# Producers' spans a batch's span links to, at most (OpenTelemetry's default limit).
MAX_LINKS = 128
# Batches written at once. A batch's dead letters and merges go out as soon as it is
# prepared, while the batch before it may still be in Redis or committing: the projector
# waits for Redis only when it is two batches behind.
WRITES_IN_FLIGHT = 2


class OffsetControl(PartitionControl, Protocol):
    """The part of the Kafka consumer a batch needs."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


@dataclass
class BatchOutcome:
    events: int = 0
    dead_lettered: int = 0
    # Events of the jobs whose merge changed nothing: redeliveries and superseded events.
    duplicates: int = 0
    jobs: int = 0
    jobs_changed: int = 0
    merged_at: float = 0.0  # wall clock when Redis confirmed the merges
    merge_seconds: float = 0.0  # the merges' round trip to Redis (the attempt that succeeded)
    merged_seconds: float = 0.0  # from the batch's hand-over to its merges confirmed

    @property
    def applied(self) -> int:
        return self.events - self.dead_lettered - self.duplicates


class BatchObserver(DeadLetterObserver, Protocol):
    """Told of every committed batch and every dead letter that failed (the metrics)."""

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


@dataclass
class _Write:
    task: asyncio.Task[bool]  # True once the batch is committed, False when it was refused
    records: Sequence[Record]


class Pipeline:
    """Writes and commits batches in order, preparing each while earlier ones are written.

    Merges are idempotent and commute, so a batch's merges need not wait for the batch before
    it; its commit does, so commits stay in order."""

    def __init__(
        self,
        storage: StorageRules,
        merge: Merge,
        dead_letters: DeadLetterSink,
        backoff: Backoff,
        observer: BatchObserver | None = None,
        retention_seconds: int | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._tracer = tracer_of("projector.pipeline", tracer_provider)
        self._storage = storage
        self._merge = merge
        self._retention = retention_seconds
        self.dead_letters = DeadLetters(dead_letters, observer)
        self._backoff = backoff
        self._observer = observer
        self._in_flight: deque[_Write] = deque()
        # What is being retried now (a merge or a commit of a batch in flight), and why.
        self._failing: dict[object, str] = {}

    @property
    def retrying(self) -> str | None:
        """Why a batch's merge or commit is being retried; None while everything goes through."""
        return next(iter(self._failing.values()), None)

    @property
    def retrying_batches(self) -> int:
        return len(self._failing)

    async def handle(self, records: Sequence[Record], consumer: OffsetControl) -> None:
        """Prepare a batch and start writing it once fewer than WRITES_IN_FLIGHT earlier
        batches are in flight. Never raises (cancellation abandons the batches in flight
        uncommitted)."""
        if not records:
            return
        started = time.perf_counter()
        try:
            batch = await prepare_cooperatively(records, self._storage, self._retention)
        except Exception as error:  # a bug, not bad input: never skip past it
            log.exception("batch of %d records not prepared (%s); rewinding", len(records), error)
            await self.settle()
            rewind(consumer, records)
            await asyncio.sleep(self._backoff.next_delay())
            return
        in_flight = self._in_flight
        while len(in_flight) >= WRITES_IN_FLIGHT:
            await in_flight.popleft().task
        previous = in_flight[-1].task if in_flight else None
        task = asyncio.create_task(self._write_and_commit(batch, consumer, started, previous))
        in_flight.append(_Write(task, records))

    async def settle(self) -> bool:
        """Wait for every batch in flight; False when a commit of one was refused."""
        committed = True
        while self._in_flight:
            committed = await self._in_flight.popleft().task and committed
        return committed

    async def close(self) -> None:
        """Abandon the batches in flight, if any: they are not committed, so they come again."""
        while self._in_flight:
            task = self._in_flight.pop().task  # the latest first: it waits for the others
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dead_letters.close()

    async def merge(self, batch: PreparedBatch) -> BatchOutcome:
        """Merge a batch's jobs. Raises when a merge failed."""
        outcome = BatchOutcome(events=len(batch.records), dead_lettered=len(batch.dead))
        sent = time.perf_counter()
        if batch.expire_at is None:
            changed = await self._merge(batch.jobs, batch.packed)
        else:
            expiring: Any = self._merge  # ProjectionStore.merge_packed takes the expiries
            changed = await expiring(batch.jobs, batch.packed, batch.expire_at)
        outcome.merged_at = time.time()
        outcome.merge_seconds = time.perf_counter() - sent
        outcome.jobs = len(changed)
        unchanged = [index for index, groups in enumerate(changed) if not groups]
        outcome.jobs_changed = outcome.jobs - len(unchanged)
        counts = batch.events_per_job
        outcome.duplicates = sum(counts.get(index, 1) for index in unchanged)
        return outcome

    async def _write_and_commit(
        self,
        batch: PreparedBatch,
        consumer: OffsetControl,
        started: float,
        previous: asyncio.Task[bool] | None,
    ) -> bool:
        span = None if self._tracer is None else self._batch_span(self._tracer, batch)
        committed = False
        try:
            committed = await self._write_then_commit(batch, consumer, started, previous)
        finally:
            if span is not None:
                span.set_attribute("projector.committed", committed)
                span.end()
        return committed

    @staticmethod
    def _batch_span(tracer: Tracer, batch: PreparedBatch) -> Span:
        """A span per batch, linked to the producers' spans (W3C `traceparent` headers): a
        batch continues many traces at once."""
        links = []
        for record in batch.records:
            for name, value in record.headers:
                if name == TRACEPARENT and (link := link_to(value)) is not None:
                    links.append(link)
                    break
            if len(links) >= MAX_LINKS:
                break
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(batch.records),
            "projector.jobs": len(batch.jobs),
            "projector.dead_lettered": len(batch.dead),
        }
        return tracer.start_span(
            "projector batch", kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )

    async def _write_then_commit(
        self,
        batch: PreparedBatch,
        consumer: OffsetControl,
        started: float,
        previous: asyncio.Task[bool] | None,
    ) -> bool:
        size = len(batch.records)
        if batch.dead:  # once: a dead letter that fails makes its partition wait, never raises
            await self.dead_letters.send(batch.dead, consumer)
        outcome = await self._until_done(
            lambda: self.merge(batch), f"batch of {size} records not written"
        )
        outcome.merged_seconds = time.perf_counter() - started
        if previous is not None:
            await previous  # commits stay in order; its merges are in Redis either way
        offsets = self.dead_letters.commit_offsets(next_offsets(batch.records))
        try:
            await self._until_done(
                lambda: consumer.commit(offsets), f"offsets of {size} records not committed"
            )
        except REFUSED_COMMITS as error:
            log.warning(
                "commit of %d records refused (%s): their partitions are read again from "
                "the committed offsets",
                size,
                one_line(f"{type(error).__name__}: {error}"),
            )
            return False
        self._backoff.reset()
        if self._observer is not None:
            self._observer.batch_committed(batch, outcome, time.perf_counter() - started, offsets)
        return True

    async def _until_done(self, step: Callable[[], Awaitable[T]], failure: str) -> T:
        """`step()`, retried after each failure once the backoff's delay has passed; a
        refused commit is raised at once."""
        attempt = object()
        retries = 0
        try:
            while True:
                try:
                    done = await step()
                except REFUSED_COMMITS:
                    raise
                except Exception as error:
                    retries += 1
                    delay = self._backoff.next_delay()
                    reason = one_line(f"{type(error).__name__}: {error}")
                    self._failing[attempt] = f"{failure} ({reason})"
                    log.warning("%s (%s); retry in %.2f s", failure, reason, delay)
                    await asyncio.sleep(delay)
                else:
                    if retries:  # the operator saw the warnings: say that it is over
                        log.info("%s until retry %d; done now", failure, retries)
                    return done
        finally:
            self._failing.pop(attempt, None)


def rewind(consumer: OffsetControl, records: Sequence[Record]) -> None:
    for tp, offset in first_offsets(records).items():
        try:
            consumer.seek(tp, offset)
        except Exception:  # revoked by a rebalance: its new owner starts from the commit
            log.info("partition %s no longer assigned; not rewound", tp)
