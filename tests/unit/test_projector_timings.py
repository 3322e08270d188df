"""The projector's timing metrics: fetch delay and batch sizes at the hand-over, the merge's
round trip and the hand-over to merged time of committed batches, garbage-collection pauses
and event-loop lag (fed by `contracts.pauses`)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import ConsumerRecord

from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from projector.batch import LATENCY_SAMPLE
from projector.fold import JobRef
from projector.intake import Record
from projector.metrics import ProjectorMetrics
from projector.pipeline import Backoff, Pipeline
from tests.unit.test_batch import FakeConsumer, FakeSink
from tests.unit.test_metrics import sample


def stamped(offset: int, timestamp_ms: int) -> Record:
    return ConsumerRecord("jobs", 0, offset, timestamp_ms, 0, b"k", b"{}", None, 1, 2, [])


def test_the_fetch_delay_is_measured_from_the_record_s_timestamp_on_a_sample() -> None:
    metrics = ProjectorMetrics()
    now = 1_800_000_000.0
    records = [stamped(n, int((now - 0.030) * 1000)) for n in range(100)]
    records += [stamped(100, -1)]  # no timestamp: not observed
    metrics.batch_handed_over(records, now=now)
    observed = sample(metrics, "projector_fetch_delay_seconds_count")
    assert 0 < observed <= LATENCY_SAMPLE
    assert sample(metrics, "projector_fetch_delay_seconds_bucket", le="0.025") == 0
    assert sample(metrics, "projector_fetch_delay_seconds_bucket", le="0.03") == observed
    assert sample(metrics, "projector_batch_records_count") == 1
    assert sample(metrics, "projector_batch_records_sum") == 101


def test_a_clock_behind_the_producer_s_counts_as_no_delay() -> None:
    metrics = ProjectorMetrics()
    now = 1_800_000_000.0
    metrics.batch_handed_over([stamped(0, int((now + 5) * 1000))], now=now)
    assert sample(metrics, "projector_fetch_delay_seconds_bucket", le="0.001") == 1
    metrics.batch_handed_over([])
    assert sample(metrics, "projector_batch_records_count") == 2


class SlowMerge:
    async def merge(self, jobs: list[JobRef], packed: list[str]) -> list[int]:
        await asyncio.sleep(0.02)
        return [3 for _ in jobs]


async def test_a_committed_batch_gives_its_merge_round_trip_and_its_time_to_merged() -> None:
    metrics = ProjectorMetrics()
    worker = Pipeline(STORAGE, SlowMerge().merge, FakeSink(), Backoff(), metrics)
    record = ConsumerRecord(
        "jobs", 0, 0, int(time.time() * 1000), 0, b"k", encode_event(event(seq=1)), None, 1, 1, []
    )
    await worker.handle([record], FakeConsumer())
    assert await worker.settle()
    for name in ("projector_merge_seconds", "projector_batch_merged_seconds"):
        assert sample(metrics, f"{name}_count") == 1
        assert sample(metrics, f"{name}_bucket", le="0.0175") == 0, name  # the 20 ms sleep
        assert sample(metrics, f"{name}_sum") >= 0.02
    assert sample(metrics, "projector_batch_merged_seconds_sum") >= sample(
        metrics, "projector_merge_seconds_sum"
    )


def test_pauses_and_lag_are_observed_by_generation() -> None:
    metrics = ProjectorMetrics()
    metrics.gc_paused(0.004, 2)
    metrics.gc_paused(0.0001, 0)
    metrics.gc_paused(0.5, 7)  # not a generation CPython has: ignored
    metrics.loop_lagged(0.012)
    pauses = "projector_gc_pause_seconds"
    assert sample(metrics, f"{pauses}_count", generation="2") == 1
    assert sample(metrics, f"{pauses}_bucket", generation="2", le="0.002") == 0
    assert sample(metrics, f"{pauses}_bucket", generation="2", le="0.005") == 1
    assert sample(metrics, f"{pauses}_count", generation="0") == 1
    assert sample(metrics, f"{pauses}_count", generation="1") == 0
    assert sample(metrics, "projector_event_loop_lag_seconds_bucket", le="0.01") == 0
    assert sample(metrics, "projector_event_loop_lag_seconds_bucket", le="0.02") == 1
