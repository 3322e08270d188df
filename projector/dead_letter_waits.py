"""Dead letters of a batch, and the partitions that wait for one that cannot be written.

A poison record goes to the dead-letter topic before its offset is committed (CONTRACT §1:
nothing is lost). When the topic cannot be written - deleted, no ACL, a size the broker
refuses - only the partition holding that record waits: it is paused and rewound to the
record, its commits stop short of it, and the dead letter is retried on a timer. The other
partitions go on. Any later dead letter of a waiting partition (a batch already in flight, or
records read again after a rebalance lifted the pause) joins the wait: nothing is committed
past a dead letter that is not written. Once all are written the partition resumes; the
records from there come again, are merged again (merges are idempotent) and committed, and
the dead letters already written are not written twice.

While a partition waits, the projector's `/readyz` says which and why, and the metrics count
the failures (`projector_dead_letter_failures_total`, `projector_paused_partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import TopicPartition

from projector.dead_letter import dead_letter_headers, one_line
from projector.intake import Poison, Record

log = logging.getLogger("projector.dead_letter")

RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0


class DeadLetterSink(Protocol):
    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


class PartitionControl(Protocol):
    """The part of the Kafka consumer a waiting partition needs."""

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


class DeadLetterObserver(Protocol):
    def dead_letters_failed(self, count: int) -> None: ...


Letter = tuple[Record, Poison]
Where = tuple[str, int, int]  # topic, partition, offset


def _where(record: Record) -> Where:
    return (record.topic, record.partition, record.offset)


@dataclass
class _Waiting:
    offset: int  # the partition's first record not written for good
    reason: str
    letters: list[Letter]
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def join(self, letters: Sequence[Letter]) -> None:
        """More dead letters of the partition, written by the same retries."""
        held = {_where(record) for record, _ in self.letters}
        self.letters.extend(letter for letter in letters if _where(letter[0]) not in held)


class DeadLetters:
    def __init__(self, sink: DeadLetterSink, observer: DeadLetterObserver | None = None) -> None:
        self._sink = sink
        self._observer = observer
        self._waiting: dict[TopicPartition, _Waiting] = {}
        # Written while their partition waited: not written again when the partition's
        # records come again.
        self._written: set[Where] = set()

    @property
    def waiting(self) -> dict[TopicPartition, str]:
        """The partitions that wait, and why."""
        return {tp: waiting.reason for tp, waiting in self._waiting.items()}

    async def send(self, letters: Sequence[Letter], consumer: PartitionControl) -> None:
        """Write a batch's dead letters. Never raises for a dead letter that fails: its
        partition waits (see the module's docstring)."""
        due: list[Letter] = []
        for record, poison in letters:
            if _where(record) in self._written:
                continue
            waiting = self._waiting.get(TopicPartition(record.topic, record.partition))
            if waiting is not None:
                waiting.join([(record, poison)])
            else:
                due.append((record, poison))
        self._written.difference_update(_where(record) for record, _ in letters)
        results = await asyncio.gather(
            *(self._write(record, poison) for record, poison in due), return_exceptions=True
        )
        failed: dict[TopicPartition, list[Letter]] = {}
        reasons: dict[TopicPartition, str] = {}
        written: list[Record] = []
        for (record, poison), result in zip(due, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                tp = TopicPartition(record.topic, record.partition)
                failed.setdefault(tp, []).append((record, poison))
                reasons[tp] = one_line(f"{type(result).__name__}: {result}")
            else:
                written.append(record)
        for tp, waiting_letters in failed.items():
            if not self._wait(tp, waiting_letters, reasons[tp], consumer):
                continue
            # Written in this batch after the failed one: not again when the records come back.
            first = self._waiting[tp].offset
            self._written.update(
                _where(r)
                for r in written
                if TopicPartition(r.topic, r.partition) == tp and r.offset > first
            )

    def commit_offsets(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """`offsets` with those of waiting partitions held before their waiting record."""
        capped = dict(offsets)
        for tp, waiting in self._waiting.items():
            if tp in capped:
                capped[tp] = min(capped[tp], waiting.offset)
        return capped

    async def close(self) -> None:
        for waiting in list(self._waiting.values()):
            if waiting.task is not None:
                waiting.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting.task

    async def _write(self, record: Record, poison: Poison) -> None:
        log.warning(
            "poison record partition=%s offset=%s: %s",
            record.partition,
            record.offset,
            poison.reason,
            extra={"partition": record.partition, "offset": record.offset},
        )
        headers = dead_letter_headers(poison.reason, record.topic, record.partition, record.offset)
        await self._sink.send(record.key, record.value, [*record.headers, *headers])

    def _wait(
        self, tp: TopicPartition, letters: list[Letter], reason: str, consumer: PartitionControl
    ) -> bool:
        """Make `tp` wait for `letters`; False when it is no longer ours to hold. A partition
        that already waits (two batches in flight failed on it) keeps one wait and one retry
        task, from the lower of the two offsets."""
        waiting = self._waiting.get(tp)
        offset = min(record.offset for record, _ in letters)
        if waiting is not None:
            offset = min(offset, waiting.offset)
        try:
            consumer.seek(tp, offset)
            consumer.pause(tp)
        except Exception:  # revoked meanwhile: its new owner reads from the committed offset
            log.info("partition %s no longer assigned; its dead letters are left to its owner", tp)
            return False
        if self._observer is not None:
            self._observer.dead_letters_failed(len(letters))
        if waiting is not None:
            waiting.join(letters)
            waiting.offset, waiting.reason = offset, reason
            return True
        waiting = self._waiting[tp] = _Waiting(offset, reason, list(letters))
        log.error(
            "partition %s waits: its dead letter at offset %s cannot be written (%s); the other "
            "partitions go on",
            tp.partition,
            offset,
            reason,
            extra={"partition": tp.partition, "offset": offset},
        )
        waiting.task = asyncio.create_task(self._retry(tp, waiting, consumer))
        return True

    async def _retry(
        self, tp: TopicPartition, waiting: _Waiting, consumer: PartitionControl
    ) -> None:
        delay = RETRY_BASE_SECONDS
        while waiting.letters:
            await asyncio.sleep(delay)
            delay = min(RETRY_CAP_SECONDS, delay * 2)
            # A letter stays in the list until written: one that joins meanwhile is kept too.
            for letter in list(waiting.letters):
                record, poison = letter
                try:
                    await self._write(record, poison)
                except Exception as error:
                    waiting.reason = one_line(f"{type(error).__name__}: {error}")
                    if self._observer is not None:
                        self._observer.dead_letters_failed(1)
                else:
                    waiting.letters = [held for held in waiting.letters if held is not letter]
                    self._written.add(_where(record))
        del self._waiting[tp]
        with contextlib.suppress(Exception):  # revoked meanwhile: nothing to resume
            consumer.resume(tp)
        log.info("partition %s resumes: its dead letters are written", tp.partition)
