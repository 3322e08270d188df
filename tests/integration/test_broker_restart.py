"""The broker stopped and started again while the projector runs: nothing is lost.

Tansu keeps its log in S3 here (`--storage-engine s3://<bucket>/`, the test's moto server),
so a stopped broker comes back with every record, group and committed offset on the same
port. The projector meets a broker that is gone (fetches and commits fail; it rewinds and
backs off), then the same broker again, and must end equal to the fold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devstack import Stack, create_topics, s3_client
from devstack.processes import LocalProcess, start_tansu
from tests.integration.projection import (
    assert_projection_equals_fold,
    job_events,
    produce,
    projector_env,
    shuffled_with_duplicates,
    spawn,
    wait_until_caught_up,
)
from tests.integration.support import committed_offsets, eventually

pytestmark = pytest.mark.integration


def s3_storage_env(stack: Stack) -> dict[str, str]:
    access_key, secret_key = stack.s3_credentials
    return {
        "AWS_ENDPOINT": stack.s3_endpoint_url,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


async def test_the_projector_rides_through_a_broker_restart_and_loses_nothing(
    stack: Stack,
    redis_url: str,
    redis: Redis,
    unique: str,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    bucket = f"tansu-{unique}"
    s3_client(stack).create_bucket(Bucket=bucket)
    storage, env = f"s3://{bucket}/", s3_storage_env(stack)
    broker = start_tansu(tmp_path, storage, env=env)
    processes.append(broker)
    bootstrap = f"127.0.0.1:{broker.port}"
    topic = f"jobs.events.{unique}"
    await create_topics(bootstrap, {topic: 4, f"{topic}.dlq": 1})
    events = job_events(jobs=150)
    delivery = shuffled_with_duplicates(events, seed=13)
    half = len(delivery) // 2
    processes.append(spawn(projector_env(bootstrap, topic, redis_url, version), tmp_path))
    await produce(bootstrap, topic, delivery[:half])
    group = f"jobs-projector.{version}"

    async def some_progress() -> bool:
        return sum((await committed_offsets(bootstrap, topic, group)).values()) > 0

    await eventually(some_progress, 60, "the projector's first commit")

    broker.stop()
    await asyncio.sleep(5)  # the projector meets a broker that is gone
    broker = start_tansu(tmp_path, storage, port=broker.port, env=env)
    processes.append(broker)

    await produce(bootstrap, topic, delivery[half:])
    await wait_until_caught_up(bootstrap, topic, version, len(delivery), timeout=120)
    await assert_projection_equals_fold(redis, version, events)
    assert processes[1].process.poll() is None, processes[1].log_tail()
