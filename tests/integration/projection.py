"""Running projectors against the real parts, and comparing Redis with the fold."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.job_state import JobState, decode_state, job_key, job_key_pattern
from contracts.publisher import encode_event
from devstack.data import BUCKETS, event, ulid
from devstack.processes import LocalProcess
from devstack.services import start_projector
from projector.fold import JobRef, fold
from tests.integration.support import committed_offsets, end_offsets, eventually


def projector_env(bootstrap: str, topic: str, redis_url: str, version: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": "jobs-projector",
        "REDIS_URL": redis_url,
        "PROJECTION_VERSION": version,
        "BATCH_MAX_RECORDS": "200",
        "ARTIFACT_BUCKETS": ",".join(BUCKETS),
    }


def spawn(env: dict[str, str], workdir: Path, name: str = "projector") -> LocalProcess:
    return start_projector(env, workdir, name)


def job_events(jobs: int, tenant_ids: Sequence[str] = ("acme", "globex")) -> list[JobEvent]:
    """A lifecycle per job (created .. succeeded/failed), some internal, some same-seq twins."""
    rng = random.Random(jobs)
    events: list[JobEvent] = []
    for n in range(jobs):
        job_id, tenant = ulid(), tenant_ids[n % len(tenant_ids)]
        ending = rng.choice(["succeeded", "failed", "stage"])
        kinds = ["created", "queued", "stage", "stage", ending]
        for seq, kind in enumerate(kinds, start=1):
            artifacts: list[dict[str, Any]] = []
            if kind == "succeeded":
                artifacts = [
                    {
                        "bucket": "test-renders",
                        "key": f"{job_id}/final {i}.png",
                        "kind": "on_model_render",
                        "role": "final",
                        "metadata": {"i": i},
                    }
                    for i in range(2)
                ]
            visibility = "internal" if rng.random() < 0.2 else "public"
            events.append(
                event(
                    job_id=job_id,
                    tenant_id=tenant,
                    seq=seq,
                    kind=kind,
                    visibility=visibility,
                    artifacts=artifacts,
                )
            )
        if rng.random() < 0.1:  # a second, different event with an existing seq
            events.append(event(job_id=job_id, tenant_id=tenant, seq=3, kind="stage"))
    return events


def shuffled_with_duplicates(events: list[JobEvent], seed: int = 7) -> list[JobEvent]:
    """Any order across and within jobs, with about 20 % delivered twice."""
    rng = random.Random(seed)
    delivery = events + [e for e in events if rng.random() < 0.2]
    rng.shuffle(delivery)
    return delivery


async def produce(bootstrap: str, topic: str, events: Iterable[JobEvent]) -> list[Any]:
    """Send events as they are, in this order, keyed by job id; where each one landed
    (aiokafka's RecordMetadata: partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, encode_event(e), key=e.job_id.encode()) for e in events
        ]
        return [await future for future in futures]
    finally:
        await producer.stop()


async def produce_raw(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def expected_states(events: Iterable[JobEvent]) -> dict[JobRef, JobState]:
    by_job: dict[JobRef, list[JobEvent]] = defaultdict(list)
    for e in events:
        by_job[(e.tenant_id, e.job_id)].append(e)
    return {ref: fold(job) for ref, job in by_job.items()}


async def stored_state(redis: Redis, version: str, ref: JobRef) -> JobState:
    raw = await redis.hgetall(job_key(version, *ref))
    return decode_state({_text(k): _text(v) for k, v in raw.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def differing_jobs(redis: Redis, version: str, events: Iterable[JobEvent]) -> list[JobRef]:
    expected = expected_states(events)
    return [
        ref for ref, state in expected.items() if await stored_state(redis, version, ref) != state
    ]


async def assert_projection_equals_fold(
    redis: Redis, version: str, events: Iterable[JobEvent]
) -> None:
    events = list(events)
    expected = expected_states(events)
    for ref, state in expected.items():
        assert await stored_state(redis, version, ref) == state, f"job {ref} differs from the fold"
    keys = [k async for k in redis.scan_iter(match=job_key_pattern(version), count=1000)]
    assert len(keys) == len(expected), "no job beyond the events' jobs is stored"


async def wait_until_caught_up(
    bootstrap: str, topic: str, version: str, records: int, timeout: float = 90.0
) -> None:
    """Until the projector's group has committed the end of every partition."""
    group = f"jobs-projector.{version}"
    ends = await end_offsets(bootstrap, topic, records)

    async def caught_up() -> bool:
        committed = await committed_offsets(bootstrap, topic, group)
        return all(committed.get(partition) == end for partition, end in ends.items())

    await eventually(caught_up, timeout, f"group {group} committing {ends}")
