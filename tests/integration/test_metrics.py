"""Both `/metrics` endpoints after real traffic, and the projector's health endpoints
against a Redis that goes away and comes back (CONTRACT §5)."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.events import JobEvent
from contracts.publisher import encode_event
from devstack import Stack
from devstack.data import event, ulid
from devstack.processes import LocalProcess, start_redis
from devstack.services import start_api
from tests.integration.projection import (
    produce,
    produce_raw,
    projector_env,
    spawn,
    wait_until_caught_up,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

SECRET = "metrics-test-secret-0123456789abcdef"  # noqa: S105 - a test key
JOBS = 30
POISON = [b"not json", b"{}", b'{"schema_version": 1}', b"[1, 2]", b"\xff\xfe"]

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """Every sample by name, then by its sorted labels."""
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    if name.startswith("projector_") and not name.startswith("projector_build"):
        labels = {"version": "v1", "group": "jobs-projector.v1"} | labels
    return samples[name].get(tuple(sorted(labels.items())), 0.0)


def lifecycle(bucket: str, now: datetime) -> list[JobEvent]:
    """Per job, in seq order: created, queued, succeeded with two artifacts; all just now."""
    events = []
    for _ in range(JOBS):
        job_id = ulid()
        artifacts: list[dict[str, Any]] = [
            {"bucket": bucket, "key": f"{job_id}/{i}.png", "kind": "render", "role": "final"}
            for i in range(2)
        ]
        for seq, kind in enumerate(["created", "queued", "succeeded"], start=1):
            one = event(
                job_id=job_id, seq=seq, kind=kind, artifacts=artifacts if seq == 3 else None
            )
            events.append(one.model_copy(update={"occurred_at": now}))
    return events


def token(tenant: str = "acme") -> str:
    return jwt.encode(
        {"tenant_id": tenant, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256"
    )


async def test_metrics_count_real_traffic(
    stack: Stack,
    topic: str,
    bucket: str,
    own_redis: LocalProcess,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    redis_url = f"redis://127.0.0.1:{own_redis.port}/0"
    env = projector_env(stack.kafka_bootstrap, topic, redis_url, "v1")
    projector = spawn(env, tmp_path)
    processes.append(projector)
    api = start_api({**stack.env(), "REDIS_URL": redis_url, "JWT_SECRET": SECRET}, tmp_path)
    processes.append(api)

    events = lifecycle(bucket, datetime.now(UTC))
    await produce(stack.kafka_bootstrap, topic, events)
    await wait_until_caught_up(stack.kafka_bootstrap, topic, "v1", len(events))
    # Then, once applied: exact redeliveries of 20 events, and poison.
    again = events[:20]
    await produce_raw(
        stack.kafka_bootstrap,
        topic,
        [(e.job_id.encode(), encode_event(e)) for e in again] + [(b"k", v) for v in POISON],
    )
    records = len(events) + len(again) + len(POISON)
    await wait_until_caught_up(stack.kafka_bootstrap, topic, "v1", records)

    seen = await scrape(projector.port)
    assert value(seen, "projector_events_total", outcome="applied") == len(events)
    assert value(seen, "projector_events_total", outcome="duplicate") == len(again)
    assert value(seen, "projector_events_total", outcome="dead_lettered") == len(POISON)
    assert value(seen, "projector_batch_seconds_count") >= 2
    assert 0 < value(seen, "projector_batch_seconds_sum") < 60
    observed = value(seen, "projector_event_to_visible_seconds_count")
    assert observed >= 2  # a sample of each batch
    # The events occurred just before they were produced: visible within seconds.
    assert value(seen, "projector_event_to_visible_seconds_bucket", le="30.0") == observed
    lag = seen["projector_consumer_lag"]
    assert {dict(labels)["partition"] for labels in lag} == {"0", "1", "2", "3"}
    assert set(lag.values()) == {0.0}, "everything is committed"
    assert value(seen, "projector_build_info", python=_python(seen), version=_version(seen)) == 1
    assert value(seen, "projector_ready") == 1
    assert value(seen, "projector_paused_partitions") == 0
    assert value(seen, "projector_retrying_batches") == 0
    # Per batch: its size, its records' fetch delay, its merge; the process's pauses.
    batches = value(seen, "projector_batch_records_count")
    assert batches >= 2
    assert value(seen, "projector_batch_records_sum") == records
    assert batches <= value(seen, "projector_fetch_delay_seconds_count") <= records
    assert value(seen, "projector_merge_seconds_count") >= 2
    assert value(seen, "projector_batch_merged_seconds_count") >= 2
    assert value(seen, "projector_event_loop_lag_seconds_count") > 0, "a timer every 50 ms"
    assert ("projector_gc_pause_seconds_count", "2") in {
        (name, dict(labels).get("generation")) for name in seen for labels in seen[name]
    }
    assert value(seen, "process_resident_memory_bytes") > 0, "the process collectors"
    assert "python_gc_collections_total" in seen

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
        headers = {"Authorization": f"Bearer {token()}"}
        for done in events[2:15:3]:  # the succeeded event of five jobs
            assert (await client.get(f"/v1/jobs/{done.job_id}", headers=headers)).status_code == 200
        assert (await client.get(f"/v1/jobs/{ulid()}", headers=headers)).status_code == 404
        assert (await client.get(f"/v1/jobs/{events[0].job_id}")).status_code == 401
        assert (await client.get("/../etc/passwd", headers=headers)).status_code == 404
        assert (await client.get("/readyz")).status_code == 200

    served = await scrape(api.port)
    job_route = "/v1/jobs/{id}"
    assert value(served, "api_request_seconds_count", route=job_route, status="200") == 5
    assert value(served, "api_request_seconds_count", route=job_route, status="404") == 1
    assert value(served, "api_request_seconds_count", route=job_route, status="401") == 1
    assert value(served, "api_request_seconds_count", route="other", status="404") == 1
    assert value(served, "api_request_seconds_count", route="/readyz", status="200") == 1
    assert 0 < value(served, "api_request_seconds_sum", route=job_route, status="200") < 5
    # Two artifacts per job, in its manifest and again in its latest event (the succeeded).
    assert value(served, "api_presign_seconds_count") == 5 * 2 * 2
    assert 0 < value(served, "api_presign_seconds_sum") < 0.1
    assert any(labels for labels in served["api_build_info"])
    assert value(served, "process_resident_memory_bytes") > 0
    assert value(served, "api_long_polls") == 0
    # Six reads of six jobs, each read once: none is hot, each one went to Redis.
    assert value(served, "api_near_cache_misses_total") == 6
    assert value(served, "api_near_cache_hits_total") == 0
    assert value(served, "api_redis_read_seconds_count") == 6
    assert value(served, "api_near_cache_flushes_total") == 0
    assert value(served, "api_event_loop_lag_seconds_count") > 0, "a timer every 50 ms"


async def test_with_several_api_workers_any_scrape_counts_every_worker(
    stack: Stack, own_redis: LocalProcess, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    env = {**stack.env(), "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    workers = {"API_WORKERS": "3", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    api = start_api(env | {"JWT_SECRET": SECRET} | workers, tmp_path)
    processes.append(api)
    headers = {"Authorization": f"Bearer {token()}"}
    requests = 60
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each: any worker
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{api.port}", timeout=10, limits=limits
    ) as client:
        for _ in range(requests):
            assert (await client.get(f"/v1/jobs/{ulid()}", headers=headers)).status_code == 404
        counts = []
        for _ in range(5):  # scrapes answered by whichever worker accepts
            answer = await client.get("/metrics")
            samples = parse(answer.text)
            counts.append(
                value(samples, "api_request_seconds_count", route="/v1/jobs/{id}", status="404")
            )
    assert counts == [requests] * 5, counts
    served_by = {path.name for path in multiproc.glob("histogram_*.db")}
    assert len(served_by) > 1, f"the requests went to one worker only: {served_by}"


def _version(samples: Samples) -> str:
    return dict(next(iter(samples["projector_build_info"])))["version"]


def _python(samples: Samples) -> str:
    return dict(next(iter(samples["projector_build_info"])))["python"]


async def test_projector_readyz_follows_redis(
    stack: Stack,
    topic: str,
    own_redis: LocalProcess,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    redis_url = f"redis://127.0.0.1:{own_redis.port}/0"
    projector = spawn(projector_env(stack.kafka_bootstrap, topic, redis_url, "v1"), tmp_path)
    processes.append(projector)

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{projector.port}", timeout=10
    ) as client:

        async def answers(path: str, status: int) -> bool:
            try:
                return (await client.get(path)).status_code == status
            except httpx.TransportError:  # not listening yet
                return False

        await eventually(lambda: answers("/readyz", 200), 30, "projector ready (joined)")
        assert (await client.get("/healthz")).status_code == 200

        own_redis.stop()
        started = time.monotonic()
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert (body["status"], body["failing"]) == ("not ready", ["redis"])
        assert body["reasons"]["redis"], "the reason is said"
        assert time.monotonic() - started < 5
        assert (await client.get("/healthz")).status_code == 200

        processes.append(start_redis(tmp_path, port=own_redis.port))
        await eventually(lambda: answers("/readyz", 200), 15, "projector ready again")
        # And it still projects: the merge function was loaded again into the new Redis.
        await produce(stack.kafka_bootstrap, topic, [event(job_id=ulid())])
        await wait_until_caught_up(stack.kafka_bootstrap, topic, "v1", 1)
