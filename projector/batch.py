"""A consumer batch prepared for writing: every record parsed once, the events folded per job.

Pure CPU work, no I/O: what `projector.pipeline` then writes (dead letters, merges) and
commits. `prepare_cooperatively` yields to the event loop every few milliseconds, so that the
batch before this one keeps being written while this one is prepared.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition

from contracts.storage import StorageRules
from projector.fold import BatchFold, JobRef
from projector.intake import Poison, Record, parse

# Events per batch whose occurred_at -> visible latency is observed.
LATENCY_SAMPLE = 16
# Records parsed (or jobs encoded) between two yields to the event loop: a few ms of work.
RECORDS_PER_SLICE = 500


@dataclass
class PreparedBatch:
    """A batch after the CPU work: its poison records and its per-job deltas."""

    records: Sequence[Record]
    dead: list[tuple[Record, Poison]]
    jobs: list[JobRef]
    packed: list[str]  # the jobs' deltas, three values per job (`BatchFold.packed`)
    # Events per job index, for the jobs seen more than once (BatchFold.events_per_job).
    events_per_job: dict[int, int] = field(default_factory=dict)
    occurred_at: list[datetime] = field(default_factory=list)  # a sample, for the latency
    # Per job, when its key expires (JOB_RETENTION_SECONDS; `BatchFold.expire_at`).
    expire_at: list[str] | None = None


def prepare(
    records: Sequence[Record], storage: StorageRules, retention_seconds: int | None = None
) -> PreparedBatch:
    """Parse every record once and fold the events per job. Never fails on bad input."""
    fold, dead = BatchFold(), list[tuple[Record, Poison]]()
    _fold_records(records, storage, fold, dead)
    return _prepared(records, dead, fold, fold.packed()[1], retention_seconds)


async def prepare_cooperatively(
    records: Sequence[Record], storage: StorageRules, retention_seconds: int | None = None
) -> PreparedBatch:
    """`prepare`, yielding to the event loop between slices of the work: the previous batch's
    write (sending it, reading Redis's replies, committing) then progresses while this one is
    prepared, instead of waiting unsent whenever the next batch comes from the consumer's
    buffer without a suspension."""
    fold, dead = BatchFold(), list[tuple[Record, Poison]]()
    for start in range(0, len(records), RECORDS_PER_SLICE):
        _fold_records(records[start : start + RECORDS_PER_SLICE], storage, fold, dead)
        await asyncio.sleep(0)
    packed: list[str] = []
    for part in fold.packed_slices(RECORDS_PER_SLICE):
        packed.extend(part)
        await asyncio.sleep(0)
    return _prepared(records, dead, fold, packed, retention_seconds)


def _fold_records(
    records: Sequence[Record],
    storage: StorageRules,
    fold: BatchFold,
    dead: list[tuple[Record, Poison]],
) -> None:
    add = fold.add
    for record in records:
        parsed = parse(record, storage)
        if isinstance(parsed, Poison):
            dead.append((record, parsed))
        else:
            add(parsed)


def _prepared(
    records: Sequence[Record],
    dead: list[tuple[Record, Poison]],
    fold: BatchFold,
    packed: list[str],
    retention_seconds: int | None,
) -> PreparedBatch:
    return PreparedBatch(
        records,
        dead,
        fold.jobs(),
        packed,
        fold.events_per_job(),
        fold.occurred_at_sample(LATENCY_SAMPLE),
        None if retention_seconds is None else fold.expire_at(retention_seconds),
    )


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


def tune_garbage_collector() -> None:
    """A batch allocates thousands of short-lived, acyclic objects (events, dicts, strings)
    that reference counting frees; the cyclic collector, triggered every 700 allocations by
    default, kept re-scanning them and took a large share of the CPU per event. Collections
    stay on, rarer, and what start-up built is left out of them."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
