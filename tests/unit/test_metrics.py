"""The metrics of both processes, fed with in-memory fakes (the real scrape is in
tests/integration/test_metrics.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition
from starlette.types import Message, Receive, Scope, Send

from api.metrics import ApiMetrics, RequestMetrics, route_of
from contracts.http import JOB_ROUTE
from contracts.publisher import encode_event
from devstack.data import STORAGE, event
from projector.fold import JobRef
from projector.metrics import ProjectorMetrics
from projector.pipeline import Backoff, Pipeline
from tests.unit.test_batch import FakeConsumer, FakeSink, record


def sample(metrics: ProjectorMetrics | ApiMetrics, name: str, **labels: str) -> float:
    if isinstance(metrics, ProjectorMetrics):  # every projector series names its version
        labels = {"version": "v1", "group": "jobs-projector.v1"} | labels
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


class ChangesOnlyJob:
    """A Redis merge that changes only one job: the others' events were already there."""

    def __init__(self, changed: str) -> None:
        self.changed = changed

    async def merge(self, jobs: list[JobRef], packed: list[str]) -> list[int]:
        return [3 if job == self.changed else 0 for _tenant, job in jobs]


async def test_events_are_counted_by_outcome() -> None:
    a, b = "01JDQ8Z3M4000000000000000A", "01JDQ8Z3M4000000000000000B"
    events = [event(job_id=a, seq=1), event(job_id=a, seq=2), event(job_id=b, seq=1)]
    records = [record(n, encode_event(e)) for n, e in enumerate(events)]
    records.append(record(3, b"{poison"))
    records.append(record(4, encode_event(events[2])))  # a redelivery of b's event
    metrics = ProjectorMetrics()
    worker = Pipeline(
        STORAGE, ChangesOnlyJob(a).merge, FakeSink(), Backoff(base=0.001, cap=0.002), metrics
    )
    await worker.handle(records, FakeConsumer())
    assert await worker.settle()
    assert sample(metrics, "projector_events_total", outcome="applied") == 2  # a's two
    assert sample(metrics, "projector_events_total", outcome="duplicate") == 2  # b's two
    assert sample(metrics, "projector_events_total", outcome="dead_lettered") == 1
    assert sample(metrics, "projector_batch_seconds_count") == 1
    assert sample(metrics, "projector_event_to_visible_seconds_count") == 2  # one per job


async def test_event_to_visible_is_measured_from_occurred_at() -> None:
    recent = event(seq=1).model_copy(update={"occurred_at": datetime.now(UTC)})
    old = event(seq=1, job_id="01JDQ8Z3M4000000000000000C").model_copy(
        update={"occurred_at": datetime.now(UTC) - timedelta(seconds=100)}
    )
    metrics = ProjectorMetrics()
    worker = Pipeline(STORAGE, ChangesOnlyJob("").merge, FakeSink(), Backoff(), metrics)
    await worker.handle(
        [record(0, encode_event(recent)), record(1, encode_event(old))], FakeConsumer()
    )
    assert await worker.settle()
    buckets = "projector_event_to_visible_seconds_bucket"
    assert sample(metrics, buckets, le="1.0") == 1
    assert sample(metrics, buckets, le="60.0") == 1
    assert sample(metrics, buckets, le="300.0") == 2


class Assigned:
    def __init__(self, highwater: dict[int, int | None], position: int) -> None:
        self._highwater = {TopicPartition("jobs", p): h for p, h in highwater.items()}
        self._position = position

    def assignment(self) -> Iterable[TopicPartition]:
        return set(self._highwater)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._highwater[partition]

    async def position(self, partition: TopicPartition) -> int:
        return self._position


async def test_lag_is_the_high_watermark_minus_the_commit_and_forgets_revoked_partitions() -> None:
    metrics = ProjectorMetrics()
    worker = Pipeline(STORAGE, ChangesOnlyJob("").merge, FakeSink(), Backoff(), metrics)
    await worker.handle([record(9, encode_event(event(seq=1)), partition=0)], FakeConsumer())
    assert await worker.settle()  # partition 0 committed at 10
    await metrics.refresh_lag(Assigned({0: 25, 1: 7, 2: None}, position=3))
    assert sample(metrics, "projector_consumer_lag", partition="0") == 15
    assert sample(metrics, "projector_consumer_lag", partition="1") == 4  # from its position
    assert metrics.registry.get_sample_value("projector_consumer_lag", {"partition": "2"}) is None
    await metrics.refresh_lag(Assigned({1: 7}, position=7))
    assert metrics.registry.get_sample_value("projector_consumer_lag", {"partition": "0"}) is None
    assert sample(metrics, "projector_consumer_lag", partition="1") == 0


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3Q2", JOB_ROUTE),
        ("/v1/jobs/not-a-ulid", JOB_ROUTE),
        ("/v1/jobs/a/b", "other"),
        ("/healthz", "/healthz"),
        ("/v1/jobs", "other"),
        ("/" + "x" * 5000, "other"),
    ],
)
def test_requests_are_labelled_by_route_template_never_by_path(path: str, route: str) -> None:
    assert route_of(path) == route


@pytest.mark.parametrize(
    ("query", "route"),
    [
        (b"", "/v1/jobs/{id}"),
        (b"wait=0", "/v1/jobs/{id}"),
        (b"after_seq=3&wait=0.0", "/v1/jobs/{id}"),
        (b"wait=20&after_seq=3", "/v1/jobs/{id}?wait"),
        (b"after_seq=3&wait=0.5", "/v1/jobs/{id}?wait"),
    ],
)
def test_long_polls_have_a_route_label_of_their_own(query: bytes, route: str) -> None:
    assert route_of("/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3Q2", query) == route


async def test_a_request_the_app_fails_counts_as_500() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    metrics = ApiMetrics()
    middleware = RequestMetrics(failing, metrics, None)

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "http", "path": "/healthz", "method": "GET"}
    with pytest.raises(RuntimeError):
        await middleware(scope, receive, send)
    assert sample(metrics, "api_request_seconds_count", route="/healthz", status="500") == 1


class Resetting(Assigned):
    async def position(self, partition: TopicPartition) -> int:
        await asyncio.sleep(60)  # an offset reset that takes its time
        return 0


async def test_a_scrape_skips_a_partition_whose_position_is_not_known_yet() -> None:
    metrics = ProjectorMetrics()
    started = time.monotonic()
    await metrics.refresh_lag(Resetting({0: 25}, position=0))
    assert time.monotonic() - started < 2
    assert metrics.registry.get_sample_value("projector_consumer_lag", {"partition": "0"}) is None
