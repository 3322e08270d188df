"""`replay job` against the real broker and Redis: the diff, the repair, and its guards.

One topic is projected once by a real projector for the whole module; each test damages and
repairs jobs of its own, and checks that nothing else in Redis was written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import WatchError

from contracts.events import JobEvent
from contracts.job_state import (
    STATUS_BY_KIND,
    JobState,
    Status,
    change_channel,
    encode_state,
    head_value,
    job_key,
    job_key_pattern,
    join_groups,
)
from contracts.publisher import encode_event
from devstack import create_topics
from devstack.data import BUCKETS, event, ulid
from projector.fold import JobRef, fold
from projector.replay import repair
from projector.replay.topic import partition_for_key
from projector.settings import ProjectorSettings
from projector.store import load_functions
from tests.integration.projection import (
    expected_states,
    job_events,
    produce,
    produce_raw,
    projector_env,
    spawn,
    stored_state,
    wait_until_caught_up,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


@dataclass
class Projected:
    """The module's topic, as projected by a real projector into `version`."""

    bootstrap: str
    redis_url: str
    topic: str
    version: str
    events: list[JobEvent]
    twin: str  # a job id that two tenants use
    mixed_case: str  # a job keyed upper-case by some producers, lower-case by others

    def job(self, n: int) -> JobRef:
        """The n-th job of the generated lifecycles; each test uses its own."""
        return list(expected_states(self.events))[n]

    def expected(self, ref: JobRef) -> JobState:
        return fold(e for e in self.events if (e.tenant_id, e.job_id) == ref)

    def key(self, ref: JobRef) -> str:
        return job_key(self.version, *ref)

    def env(self) -> dict[str, str]:
        return projector_env(self.bootstrap, self.topic, self.redis_url, self.version)


def twin_events(job_id: str) -> list[JobEvent]:
    """acme's job stops at seq 3; globex's job with the same id succeeded at seq 4."""
    return [
        event(job_id=job_id, tenant_id=tenant, seq=seq, kind=kind)
        for tenant, kinds in (("acme", 3), ("globex", 4))
        for seq, kind in enumerate(["created", "queued", "stage", "succeeded"][:kinds], start=1)
    ]


def id_split_by_case() -> str:
    """A job id whose upper- and lower-case forms hash to different partitions."""
    while True:
        job_id = ulid()
        upper = partition_for_key(job_id.encode(), PARTITIONS)
        if upper != partition_for_key(job_id.lower().encode(), PARTITIONS):
            return job_id


@pytest.fixture(scope="module")
async def projected(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Projected:
    unique = uuid.uuid4().hex[:10]
    topic, version = f"jobs.events.{unique}", f"t{unique}"
    await create_topics(kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    generated, twin, mixed_case = job_events(jobs=12), ulid(), id_split_by_case()
    twins = twin_events(twin)
    mixed = [event(job_id=mixed_case, seq=seq, kind="stage") for seq in range(1, 5)]
    await produce(kafka_bootstrap, topic, [*generated, *twins, *mixed[:2]])
    lower_keyed = [(mixed_case.lower().encode(), encode_event(e)) for e in mixed[2:]]
    poison = (generated[0].job_id.encode(), b'{"schema_version": 1,')
    await produce_raw(kafka_bootstrap, topic, [*lower_keyed, poison])
    events = [*generated, *twins, *mixed]
    result = Projected(kafka_bootstrap, redis_url, topic, version, events, twin, mixed_case)
    projector = spawn(result.env(), tmp_path_factory.mktemp("projector"))
    try:
        await wait_until_caught_up(kafka_bootstrap, topic, version, len(events) + 1)
    finally:
        projector.stop()
    return result


async def run_job(projected: Projected, ref: JobRef, *, dry_run: bool = False) -> int:
    settings = ProjectorSettings(
        kafka_bootstrap_servers=projected.bootstrap,
        redis_url=projected.redis_url,
        kafka_topic=projected.topic,
        kafka_group_id="jobs-projector",
        projection_version=projected.version,
        artifact_buckets=",".join(BUCKETS),
    )
    args = argparse.Namespace(
        tenant=ref[0],
        job_id=ref[1],
        version=projected.version,
        dry_run=dry_run,
        yes=True,
        scan_all_partitions=False,
    )
    return await repair.command(settings, args)


@asynccontextmanager
async def not_written(redis: Redis, *keys: str) -> AsyncIterator[None]:
    """Fails when any of the keys is written inside the block, even with the same value."""
    async with redis.pipeline(transaction=True) as pipeline:
        watching: Any = pipeline  # redis-py leaves `multi` untyped
        await watching.watch(*keys)
        yield
        watching.multi()
        watching.exists(*keys)
        try:
            await watching.execute()
        except WatchError:
            pytest.fail(f"{keys} written")


async def snapshot(redis: Redis, version: str) -> dict[Any, Any]:
    """Every hash of the version, as stored."""
    keys = [key async for key in redis.scan_iter(match=job_key_pattern(version), count=1000)]
    return {key: await redis.hgetall(key) for key in keys}


async def damage_status(redis: Redis, projected: Projected, ref: JobRef) -> tuple[str, str]:
    """Store another status than the fold's; returns (stored, true) status."""
    head = projected.expected(ref).head
    assert head is not None
    wrong: Status = "FAILED" if head.status != "FAILED" else "QUEUED"
    await redis.hset(projected.key(ref), "h", head_value(*head._replace(status=wrong)))
    return wrong, head.status


async def test_a_dry_run_shows_a_changed_field_and_writes_nothing(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = projected.job(1)
    wrong, true = await damage_status(redis, projected, ref)
    events = sum(1 for e in projected.events if (e.tenant_id, e.job_id) == ref)

    async with not_written(redis, projected.key(ref)):
        assert await run_job(projected, ref, dry_run=True) == 1

    out = capsys.readouterr().out
    assert f"head.status: redis={wrong} topic={true}" in out
    partition = partition_for_key(ref[1].encode(), PARTITIONS)
    assert f"partition {partition} of {projected.topic} ({PARTITIONS} partitions)" in out
    assert f"{events} events of this job" in out
    assert "dry run: nothing written" in out


async def test_a_changed_field_is_repaired_to_the_fold_and_nothing_else_is_written(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = projected.job(2)
    await damage_status(redis, projected, ref)
    others = await snapshot(redis, projected.version)
    del others[projected.key(ref).encode()]

    assert await run_job(projected, ref) == 0

    assert "written" in capsys.readouterr().out
    assert await stored_state(redis, projected.version, ref) == projected.expected(ref)
    after = await snapshot(redis, projected.version)
    assert {key: after[key] for key in others} == others


async def test_a_deleted_job_is_recreated_and_its_readers_are_woken(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = projected.job(3)
    expected = projected.expected(ref)
    await redis.delete(projected.key(ref))
    pubsub: Any = redis.pubsub()
    await pubsub.ssubscribe(change_channel(projected.version, *ref))
    try:
        assert await run_job(projected, ref) == 0
        messages = [await pubsub.get_message(timeout=5) for _ in range(2)]
    finally:
        await pubsub.aclose()

    assert "head: absent in redis" in capsys.readouterr().out
    assert await stored_state(redis, projected.version, ref) == expected
    assert [m and (m["type"], m["data"]) for m in messages] == [
        ("ssubscribe", 1),
        ("smessage", join_groups(expected).encode()),
    ]


async def test_an_equal_job_is_reported_equal_with_its_poison_record_and_not_rewritten(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = projected.job(0)  # a poison record is keyed by its id

    async with not_written(redis, projected.key(ref)):
        assert await run_job(projected, ref) == 0

    out = capsys.readouterr().out
    assert out.rstrip().endswith("equal")
    assert "1 records of this key are not valid events (skipped):" in out
    assert "Invalid JSON" in out


async def test_another_tenants_job_with_the_same_id_is_not_mixed_in(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    acme, globex = ("acme", projected.twin), ("globex", projected.twin)
    await redis.delete(projected.key(acme))

    async with not_written(redis, projected.key(globex)):
        assert await run_job(projected, acme) == 0

    assert "4 events of this key belong to another tenant or job" in capsys.readouterr().out
    repaired = await stored_state(redis, projected.version, acme)
    assert repaired == projected.expected(acme)
    assert repaired.head is not None
    assert repaired.head.status == "RUNNING"


async def test_events_keyed_in_lower_case_are_found_on_their_own_partition(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = ("acme", projected.mixed_case)
    await redis.delete(projected.key(ref))

    assert await run_job(projected, ref) == 0

    out = capsys.readouterr().out
    for job_id in (ref[1], ref[1].lower()):
        partition = partition_for_key(job_id.encode(), PARTITIONS)
        assert f"partition {partition} of {projected.topic}" in out
    assert await stored_state(redis, projected.version, ref) == projected.expected(ref)


async def test_a_job_without_events_is_reported_and_not_written(
    projected: Projected, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = ("acme", ulid())

    async with not_written(redis, projected.key(ref)):
        assert await run_job(projected, ref) == 1

    assert "no event of this job on the topic: nothing written" in capsys.readouterr().out
    assert not await redis.exists(projected.key(ref))


async def test_the_replace_refuses_when_the_hash_changed_since_it_was_read(
    redis: Redis, version: str
) -> None:
    job_id = ulid()
    first, second, third = (fold([event(job_id=job_id, seq=s, kind="stage")]) for s in (1, 2, 3))
    await load_functions(redis)
    key = job_key(version, "acme", job_id)

    read = await repair.read_hash(redis, key)  # absent
    assert await repair.replace_if_unchanged(redis, version, "acme", job_id, read, first)
    read = await repair.read_hash(redis, key)
    await redis.hset(key, "x", "a field h, o, p do not see")  # not a change of the job
    assert await repair.replace_if_unchanged(redis, version, "acme", job_id, read, second)
    assert await redis.hgetall(key) == repair_fields(second)

    stale = await repair.read_hash(redis, key)
    await redis.hset(key, "h", repair_fields(third)[b"h"])  # a live merge, meanwhile
    assert not await repair.replace_if_unchanged(redis, version, "acme", job_id, stale, first)
    assert (await redis.hgetall(key))[b"h"] == repair_fields(third)[b"h"]


def repair_fields(state: JobState) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in encode_state(state).items()}


def changed_head(projected: Projected, ref: JobRef, n: int) -> str:
    """The job's head with the n-th status other than its own and its damaged one
    (`damage_status`): each call's differs from the one before."""
    head = projected.expected(ref).head
    assert head is not None
    damaged = "FAILED" if head.status != "FAILED" else "QUEUED"
    others = [s for s in STATUS_BY_KIND.values() if s not in (head.status, damaged)]
    return head_value(*head._replace(status=others[n % len(others)]))


def merging_after_reads(
    redis: Redis, projected: Projected, ref: JobRef, times: int
) -> Callable[[Any, str], Awaitable[dict[bytes, bytes]]]:
    """`read_hash`, its first `times` calls each followed by a change of the job's head before
    the command can write (another status at the same tag: not newer than the topic's head,
    so the command may still write)."""
    read_hash = repair.read_hash
    merged = iter(range(1, times + 1))

    async def read_then_merge(client: Any, key: str) -> dict[bytes, bytes]:
        fields = await read_hash(client, key)
        if (n := next(merged, None)) is not None:
            await redis.hset(key, "h", changed_head(projected, ref, n))
        return fields

    return read_then_merge


async def test_a_write_raced_by_a_live_merge_reads_again_and_repairs(
    projected: Projected,
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = projected.job(4)
    await damage_status(redis, projected, ref)
    monkeypatch.setattr(repair, "read_hash", merging_after_reads(redis, projected, ref, 1))

    assert await run_job(projected, ref) == 0

    out = capsys.readouterr().out
    assert out.count("the job changed in Redis meanwhile") == 1
    assert await stored_state(redis, projected.version, ref) == projected.expected(ref)
    assert await redis.hgetall(projected.key(ref)) == repair_fields(projected.expected(ref))


async def test_a_job_that_keeps_changing_is_given_up_with_nothing_written(
    projected: Projected,
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = projected.job(5)
    await damage_status(redis, projected, ref)
    attempts = repair.MAX_ATTEMPTS
    monkeypatch.setattr(repair, "read_hash", merging_after_reads(redis, projected, ref, attempts))

    assert await run_job(projected, ref) == 1

    assert f"gave up after {attempts} attempts" in capsys.readouterr().out
    last_merged = changed_head(projected, ref, attempts).encode()
    assert await redis.hget(projected.key(ref), "h") == last_merged


async def test_the_command_line_repairs_a_job_given_in_lower_case(
    projected: Projected, redis: Redis
) -> None:
    ref = projected.job(6)
    await damage_status(redis, projected, ref)
    argv = ["replay", "job", "--yes", "--tenant", ref[0], "--id", ref[1].lower(), "--version"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projector",
        *argv,
        projected.version,
        env={**os.environ, **projected.env()},
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    assert f"job {ref[0]}/{ref[1]}, version {projected.version}" in stdout.decode()
    assert "written" in stdout.decode()
    assert await stored_state(redis, projected.version, ref) == projected.expected(ref)
