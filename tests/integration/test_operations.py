"""An operator's faults against real parts: tools that cannot undo or hide data, a Redis that
would evict jobs, a dead-letter topic that cannot be written, durability and retention.

Each test is an attack or an accident an operator met; what the operator sees is asserted
with it (exit status and line, readiness, what Redis holds).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.job_state import job_key
from devstack.data import STORAGE, event, event_dict, ulid
from devstack.processes import LocalProcess, start_redis
from devstack.services import REPO
from projector.pipeline import Backoff, Pipeline
from projector.redis_client import connect_redis
from projector.replay.topic import partition_for_key
from projector.store import ProjectionStore, load_functions
from tests.integration.projection import (
    assert_projection_equals_fold,
    expected_states,
    job_events,
    produce,
    produce_raw,
    projector_env,
    spawn,
    stored_state,
    wait_until_caught_up,
)
from tests.integration.support import committed_offsets, end_offsets, eventually

pytestmark = pytest.mark.integration


def command(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "projector", *argv],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# --- replay job never undoes data ------------------------------------------------------------


def other_partition_key(job_id: str, partitions: int = 4) -> bytes:
    """A key a mis-keyed producer might use: it hashes to another partition than the job's."""
    home = partition_for_key(job_id.encode(), partitions)
    for n in range(1000):
        key = f"order-{n}".encode()
        if partition_for_key(key, partitions) != home:
            return key
    raise AssertionError("no key on another partition")


async def test_replay_job_refuses_to_roll_back_a_job_whose_events_are_on_another_partition(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    job_id = ulid()
    on_its_partition = [
        event(job_id=job_id, seq=s, kind=k) for s, k in ((1, "queued"), (2, "stage"))
    ]
    succeeded = event(job_id=job_id, seq=3, kind="succeeded")
    await produce(kafka_bootstrap, topic, on_its_partition)
    await produce_raw(
        kafka_bootstrap,
        topic,
        [(other_partition_key(job_id), succeeded.model_dump_json().encode())],
    )
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn(env, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, 3)
    everything = [*on_its_partition, succeeded]
    before = await redis.hgetall(job_key(version, "acme", job_id))

    job = ["replay", "job", "--tenant", "acme", "--id", job_id, "--version", version]
    refused = command([*job, "--yes"], env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "head.status: redis=SUCCEEDED topic=RUNNING" in refused.stdout
    assert "not on its key's partition: mis-keyed producer?" in refused.stdout
    assert await redis.hgetall(job_key(version, "acme", job_id)) == before, "nothing written"

    scanned = command([*job, "--yes", "--scan-all-partitions"], env)
    assert scanned.returncode == 0, scanned.stdout + scanned.stderr
    assert "1 events of this job were keyed otherwise" in scanned.stdout
    assert "equal" in scanned.stdout
    assert (
        await stored_state(redis, version, ("acme", job_id))
        == expected_states(everything)[("acme", job_id)]
    )


async def test_replay_job_writes_nothing_without_a_terminal_or_yes(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=1)
    (tenant, job_id), _ = next(iter(expected_states(events).items()))
    await produce(kafka_bootstrap, topic, events)
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn(env, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events))
    key = job_key(version, tenant, job_id)
    await redis.delete(key)  # lost by hand: replay job would recreate it
    done = command(["replay", "job", "--tenant", tenant, "--id", job_id, "--version", version], env)
    assert done.returncode == 1
    assert "add --yes to do it without a terminal" in done.stdout
    assert not await redis.exists(key)


# --- switching and dropping versions ---------------------------------------------------------


async def test_drop_refuses_a_version_a_running_projector_writes(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=5)
    await produce(kafka_bootstrap, topic, events)
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn(env, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events))

    refused = command(["replay", "drop", version, "--yes"], env)
    assert refused.returncode == 1
    assert f"1 running projector(s) write version {version}" in refused.stdout
    await assert_projection_equals_fold(redis, version, events)
    status = command(["replay", "status"], env)
    assert status.returncode == 0
    rows = [line.split() for line in status.stdout.splitlines()[1:] if line.strip()]
    assert [row[-1] for row in rows if row[0] == version] == ["1"], status.stdout

    forced = command(["replay", "drop", version, "--yes", "--force"], env)
    assert forced.returncode == 0, forced.stdout
    assert "--force: dropping although 1 running projector(s)" in forced.stdout


# --- start-up checks ---------------------------------------------------------------------------


async def test_a_redis_that_evicts_keys_stops_the_projector_with_one_line_unless_allowed(
    kafka_bootstrap: str,
    topic: str,
    own_redis: LocalProcess,
    own_redis_client: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    await own_redis_client.config_set("maxmemory-policy", "allkeys-lru")
    env = projector_env(kafka_bootstrap, topic, f"redis://127.0.0.1:{own_redis.port}/0", version)
    done = command(["run"], env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "maxmemory-policy is allkeys-lru" in line
    assert "REDIS_ALLOW_EVICTION=true" in line

    events = job_events(jobs=2)
    await produce(kafka_bootstrap, topic, events)
    processes.append(spawn(env | {"REDIS_ALLOW_EVICTION": "true"}, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events))


async def test_a_missing_dead_letter_topic_stops_the_projector_with_one_line(
    kafka_bootstrap: str, redis_url: str, version: str, unique: str
) -> None:
    from devstack import create_topics

    lonely = f"jobs.events.nodlq.{unique}"
    await create_topics(kafka_bootstrap, {lonely: 1})
    done = command(["run"], projector_env(kafka_bootstrap, lonely, redis_url, version))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"the dead-letter topic {lonely}.dlq does not exist" in line


# --- a dead letter that cannot be written ----------------------------------------------------


class RefusingPartition:
    """A dead-letter sink that cannot write the letters of one partition until opened (the
    local broker takes writes to a deleted topic: the fault is made at the producer)."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.open = asyncio.Event()
        self.written: list[bytes | None] = []

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        if (
            dict(headers)["dlq.partition"] == str(self.partition).encode()
            and not self.open.is_set()
        ):
            raise OSError("the dead-letter topic cannot be written")
        self.written.append(value)


async def test_a_dead_letter_that_cannot_be_written_holds_only_its_partition(
    kafka_bootstrap: str, topic: str, redis_url: str, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline on a real consumer group, broker and Redis; the sink refuses partition 1."""
    import projector.dead_letter_waits as waits

    monkeypatch.setattr(waits, "RETRY_BASE_SECONDS", 0.05)
    events = job_events(jobs=20)
    await produce(kafka_bootstrap, topic, events)
    job_id = next(e.job_id for e in events if partition_for_key(e.job_id.encode(), 4) == 1)
    await produce_raw(kafka_bootstrap, topic, [(job_id.encode(), b"{poison")])
    after = [event(job_id=job_id, seq=9, kind="failed")]  # behind the poison, on partition 1
    await produce(kafka_bootstrap, topic, after)
    records = len(events) + 2
    ends = await end_offsets(kafka_bootstrap, topic, records)
    redis = await connect_redis(redis_url)
    await load_functions(redis)
    sink = RefusingPartition(partition=1)
    pipeline = Pipeline(STORAGE, ProjectionStore(redis, version).merge_packed, sink, Backoff())
    group = f"jobs-projector.{version}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            await pipeline.handle([r for part in fetched.values() for r in part], consumer)

    loop = asyncio.create_task(consume())
    try:
        committed: dict[int, int] = {}

        async def others_done_partition_1_held() -> bool:
            committed.update(await committed_offsets(kafka_bootstrap, topic, group))
            others = all(committed.get(p) == end for p, end in ends.items() if p != 1)
            return others and committed.get(1, 0) < ends[1]

        await eventually(others_done_partition_1_held, 60, "every partition but 1 committed")
        assert [tp.partition for tp in pipeline.dead_letters.waiting] == [1]
        poison_offset = ends[1] - 2
        assert committed[1] == poison_offset, "held right before the poison record"
        sink.open.set()

        async def all_committed() -> bool:
            return await committed_offsets(kafka_bootstrap, topic, group) == ends

        await eventually(all_committed, 60, "partition 1 resumed and committed")
        assert pipeline.dead_letters.waiting == {}
        assert sink.written.count(b"{poison") == 1
        client = Redis.from_url(redis_url)
        try:
            state = await stored_state(client, version, ("acme", job_id))
            assert state.head is not None
            assert state.head.status == "FAILED", "the event behind the poison is projected"
        finally:
            await client.aclose()
    finally:
        stop.set()
        await loop
        await pipeline.close()
        await consumer.stop()
        await redis.aclose()


# --- rebuilds and retention ---------------------------------------------------------------------


async def test_a_build_from_a_topic_cut_by_retention_is_partial_and_promote_refuses_it(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The local broker cannot delete records (FIELD-NOTES): the log start offsets a broker
    gives after retention are given to the build here."""
    import argparse

    from projector.replay import build, promote
    from projector.settings import ProjectorSettings

    events = job_events(jobs=10)
    await produce(kafka_bootstrap, topic, events)

    async def cut_by_retention(consumer: Any, partitions: list[Any]) -> dict[Any, int]:
        return {tp: (3 if tp.partition == 2 else 0) for tp in partitions}

    monkeypatch.setattr(build, "log_start_offsets", cut_by_retention)
    settings = ProjectorSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        kafka_topic=topic,
        artifact_buckets="renders,test-renders",
    )
    built = argparse.Namespace(version=version, from_beginning=True)
    assert await build.command(settings, built) == 0
    out = capsys.readouterr().out
    assert "PARTIAL: the topic no longer holds every event (partition 2 starts at 3)" in out
    partial: Any = await redis.hget(f"projection:meta:{version}", "partial")
    assert json.loads(partial) == {"2": 3}

    switch = argparse.Namespace(version=version, max_lag=10**9, force=False)
    assert await promote.promote_command(settings, switch) == 1
    out = capsys.readouterr().out
    assert "built from a topic that retention had cut" in out
    assert await redis.get("projection:active") != version.encode()
    switch.force = True
    assert await promote.promote_command(settings, switch) == 0
    assert "--force: promoting although version" in capsys.readouterr().out
    await redis.delete("projection:active")


# --- durability you choose ------------------------------------------------------------------


async def test_with_min_replicas_nothing_committed_is_lost_when_the_primary_dies(
    kafka_bootstrap: str, topic: str, version: str, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(
        tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    processes += [primary, replica]
    replica_client = Redis(port=replica.port)

    async def replicating() -> bool:
        info: Any = await replica_client.info("replication")
        return bool(info["master_link_status"] == "up")

    await eventually(replicating, 30, "the replica in sync")
    env = projector_env(kafka_bootstrap, topic, f"redis://127.0.0.1:{primary.port}/0", version)
    processes.append(spawn(env | {"REDIS_MIN_REPLICAS": "1"}, tmp_path))
    first = job_events(jobs=10)
    await produce(kafka_bootstrap, topic, first)
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(first))

    replica.pause()  # acknowledges nothing: the projector must not commit
    more = job_events(jobs=10, tenant_ids=("initech",))
    try:
        await produce(kafka_bootstrap, topic, more)
        await asyncio.sleep(8)
        group = f"jobs-projector.{version}"
        held = sum((await committed_offsets(kafka_bootstrap, topic, group)).values())
        assert held == len(first), "nothing committed while no replica acknowledged"
    finally:
        replica.resume()
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(first) + len(more))

    primary.process.kill()  # everything committed was acknowledged by the replica
    primary.process.wait(timeout=10)
    await replica_client.replicaof("NO", "ONE")
    try:
        await assert_projection_equals_fold(replica_client, version, first + more)
    finally:
        await replica_client.aclose()


# --- memory: a finished job's key expires ------------------------------------------------------


async def test_job_retention_expires_finished_jobs_from_their_final_event(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    now = datetime.now(UTC)
    recent, old, running = ulid(), ulid(), ulid()

    def at(moment: datetime, **fields: Any) -> JobEvent:
        document = event_dict(**fields) | {"occurred_at": moment.isoformat()}
        return JobEvent.model_validate(document, strict=False)

    events = [
        at(now, job_id=recent, seq=1, kind="queued"),
        at(now, job_id=recent, seq=2, kind="succeeded"),
        at(now.replace(year=2020), job_id=old, seq=1, kind="failed"),  # ended long ago
        at(now, job_id=running, seq=1, kind="stage"),
    ]
    await produce(kafka_bootstrap, topic, events)
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn(env | {"JOB_RETENTION_SECONDS": "3600"}, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events))

    def key(job_id: str) -> str:
        return job_key(version, "acme", job_id)

    ttl = await redis.ttl(key(recent))
    assert 3500 < ttl <= 3600, ttl
    assert not await redis.exists(key(old)), "already past its retention: gone"
    assert await redis.ttl(key(running)) == -1, "a running job does not expire"
    # The job runs again (a retry after success): it no longer expires.
    await produce(kafka_bootstrap, topic, [at(now, job_id=recent, seq=3, kind="stage")])
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events) + 1)
    assert await redis.ttl(key(recent)) == -1
    # A repaired finished job expires as the projector would have it expire.
    await produce(kafka_bootstrap, topic, [at(now, job_id=recent, seq=4, kind="failed")])
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events) + 2)
    await redis.delete(key(recent))  # lost by hand
    argv = ["replay", "job", "--tenant", "acme", "--id", recent, "--version", version, "--yes"]
    done = command(argv, env | {"JOB_RETENTION_SECONDS": "3600"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert 3500 < await redis.ttl(key(recent)) <= 3600
