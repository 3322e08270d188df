"""The projector's Prometheus metrics (CONTRACT §5), fed once per batch.

Counting per batch, not per event, keeps the metrics off the hot path: a batch of 2,000
events costs a handful of counter increments. The event-to-visible latency and the fetch
delay are observed on a sample of each batch (`projector.batch.LATENCY_SAMPLE` events). The
consumer lag is computed when scraped, from the broker's high watermark of the last fetch and
our last commit, so it keeps growing while the projector is stuck (Redis down) instead of
showing the last value. Pauses of the process (garbage collections, a late event loop) come
from `contracts.pauses`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts.build import register_build_info, register_runtime_collectors
from projector.batch import LATENCY_SAMPLE, PreparedBatch
from projector.intake import Record
from projector.pipeline import BatchOutcome

# Seconds: from a few milliseconds (a batch, a fresh event) to minutes (a backlog).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Seconds: the stages of a fresh event's way, by the millisecond up to 50 ms (the freshness
# target's scale), then as LATENCY_BUCKETS.
STAGE_BUCKETS = (
    *(0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02),
    *(0.025, 0.03, 0.035, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
# Seconds: from a tenth of a millisecond (a young collection, a timer's granularity) to
# seconds (a process that did not get a CPU).
PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
# Records per batch handed over by the consumer (BATCH_MAX_RECORDS is 2,000 by default).
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
# A scrape must answer within Prometheus's timeout even while a partition's offset is reset.
POSITION_WAIT_SECONDS = 0.2


class Assignment(Protocol):
    """The part of the Kafka consumer the lag needs."""

    def assignment(self) -> Iterable[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...


class ProjectorMetrics:
    """Every projector series carries `version` (the projection version it writes) and
    `group` (its consumer group): projectors of two versions side by side, during a rebuild,
    stay apart in one Prometheus."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        version: str = "v1",
        group: str = "jobs-projector.v1",
    ) -> None:
        self.registry = registry or CollectorRegistry()
        whose = {"version": version, "group": group}
        self._whose = whose
        labels = list(whose)
        events = Counter(
            "projector_events_total",
            "Events consumed, by outcome: applied (merged, changing the job), duplicate "
            "(merged, changing nothing: a redelivery or a superseded event), dead_lettered.",
            ["outcome", *labels],
            registry=self.registry,
        )
        self._applied = events.labels(outcome="applied", **whose)
        self._duplicate = events.labels(outcome="duplicate", **whose)
        self._dead_lettered = events.labels(outcome="dead_lettered", **whose)
        self._batch_seconds = Histogram(
            "projector_batch_seconds",
            "A batch from its hand-over by the consumer to its commit (validate, fold, "
            "dead-letter, merge into Redis, commit).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._event_to_visible = Histogram(
            "projector_event_to_visible_seconds",
            "From an event's occurred_at to its merge confirmed by Redis (a sample of each batch).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._batch_records = Histogram(
            "projector_batch_records",
            "Records in a batch handed over by the consumer.",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._fetch_delay = Histogram(
            "projector_fetch_delay_seconds",
            "From a record's Kafka timestamp (its producer's clock; the broker's on a topic "
            "with LogAppendTime) to its hand-over to the projector by the consumer (a sample "
            "of each batch): the broker, the fetch and the consumer's wait.",
            labels,
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._batch_merged = Histogram(
            "projector_batch_merged_seconds",
            "A batch from its hand-over by the consumer to its merges confirmed by Redis "
            "(validate, fold, wait for the batches in flight before it, merge).",
            labels,
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._merge_seconds = Histogram(
            "projector_merge_seconds",
            "A batch's merges from sending them to Redis's confirmation (the round trip).",
            labels,
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        gc_pause = Histogram(
            "projector_gc_pause_seconds",
            "Collections of the cyclic garbage collector, by generation: how long each held "
            "the process.",
            ["generation", *labels],
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self._gc_pause = {g: gc_pause.labels(generation=str(g), **whose) for g in (0, 1, 2)}
        self._loop_lag = Histogram(
            "projector_event_loop_lag_seconds",
            "How late a timer of the event loop fired (one every 50 ms): every callback and "
            "socket read of the loop waited as long.",
            labels,
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        ).labels(**whose)
        self._lag = Gauge(
            "projector_consumer_lag",
            "Events on the partition not yet committed by this projector: the high "
            "watermark of the last fetch minus the committed offset.",
            ["partition", *labels],
            registry=self.registry,
        )
        self._dead_letter_failures = Counter(
            "projector_dead_letter_failures",
            "Dead letters the broker did not take; their partition waits and retries them.",
            labels,
            registry=self.registry,
        ).labels(**whose)
        self.paused_partitions = Gauge(
            "projector_paused_partitions",
            "Partitions waiting for a dead letter that cannot be written (the others go on).",
            labels,
            registry=self.registry,
        ).labels(**whose)
        self.retrying_batches = Gauge(
            "projector_retrying_batches",
            "Batches whose merge or commit failed and is being retried (Redis or Kafka away).",
            labels,
            registry=self.registry,
        ).labels(**whose)
        self.ready = Gauge(
            "projector_ready",
            "1 when /readyz answers 200, 0 otherwise; evaluated at each scrape.",
            labels,
            registry=self.registry,
        ).labels(**whose)
        register_build_info("projector", self.registry)
        register_runtime_collectors(self.registry)
        self._committed: dict[TopicPartition, int] = {}

    def batch_handed_over(self, records: Sequence[Record], now: float | None = None) -> None:
        """A batch as the consumer hands it over: its size, and the fetch delay of a sample
        of its records (`now`: the wall clock at the hand-over)."""
        self._batch_records.observe(len(records))
        if not records:
            return
        now = time.time() if now is None else now
        observe = self._fetch_delay.observe
        for record in records[:: -(-len(records) // LATENCY_SAMPLE)]:
            if record.timestamp >= 0:  # -1: a record without a timestamp (message format 0)
                observe(max(0.0, now - record.timestamp / 1000))

    def gc_paused(self, seconds: float, generation: int) -> None:
        """`contracts.pauses.watch_gc`'s callback."""
        pause = self._gc_pause.get(generation)
        if pause is not None:
            pause.observe(seconds)

    def loop_lagged(self, seconds: float) -> None:
        """`contracts.pauses.watch_loop_lag`'s callback."""
        self._loop_lag.observe(seconds)

    def batch_committed(
        self,
        batch: PreparedBatch,
        outcome: BatchOutcome,
        seconds: float,
        offsets: dict[TopicPartition, int],
    ) -> None:
        self._applied.inc(outcome.applied)
        self._duplicate.inc(outcome.duplicates)
        self._dead_lettered.inc(outcome.dead_lettered)
        self._batch_seconds.observe(seconds)
        self._batch_merged.observe(outcome.merged_seconds)
        self._merge_seconds.observe(outcome.merge_seconds)
        observe = self._event_to_visible.observe
        for occurred_at in batch.occurred_at:
            observe(max(0.0, outcome.merged_at - occurred_at.timestamp()))
        self._committed.update(offsets)

    def dead_letters_failed(self, count: int) -> None:
        self._dead_letter_failures.inc(count)

    async def refresh_lag(self, consumer: Assignment | None) -> None:
        """Set the lag of every assigned partition; forget the partitions no longer ours."""
        self._lag.clear()
        if consumer is None:
            return
        assigned = set(consumer.assignment())
        for gone in self._committed.keys() - assigned:  # another member may commit it now
            del self._committed[gone]
        for tp in sorted(assigned, key=lambda tp: tp.partition):
            highwater = consumer.highwater(tp)
            if highwater is None:  # nothing fetched yet: unknown, not zero
                continue
            done = self._committed.get(tp)
            if done is None:  # not committed by this process yet: where it reads from
                try:  # known at once, unless its offset is being reset: then skip, not hang
                    done = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_SECONDS)
                except (TimeoutError, IllegalStateError):  # revoked meanwhile, or resetting
                    continue
            self._lag.labels(partition=str(tp.partition), **self._whose).set(
                max(0, highwater - done)
            )


def consumer_of(subscriber: Any) -> Assignment | None:
    """The subscriber's aiokafka consumer once started (FastStream creates it on start)."""
    consumer: Assignment | None = getattr(subscriber, "consumer", None)
    return consumer
