"""Replay tooling on real parts: build, status, promote/rollback, and the whole runbook while
a reader hammers the api (DESIGN "Versioned projections and rebuilds")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.job_state import ACTIVE_VERSION_KEY, PREVIOUS_VERSION_KEY, job_key, job_key_pattern
from devstack import Stack
from devstack.processes import LocalProcess
from devstack.services import REPO, start_api
from tests.integration.projection import (
    assert_projection_equals_fold,
    job_events,
    produce,
    produce_raw,
    projector_env,
    shuffled_with_duplicates,
    spawn,
    wait_until_caught_up,
)
from tests.integration.support import committed_offsets, end_offsets, eventually
from tests.integration.test_api import db_url

pytestmark = pytest.mark.integration

SECRET = "replay-test-secret-0123456789abcdef"  # noqa: S105 - a test key
REPLAY_DB = 5  # a database of its own: `projection:active` is per database


@pytest.fixture
def replay_redis_url(redis_url: str) -> str:
    return db_url(redis_url, REPLAY_DB)


@pytest.fixture
async def replay_redis(replay_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(replay_redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m projector replay ...` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "projector", "replay", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_build_projects_the_topic_and_leaves_the_group_where_run_continues(
    kafka_bootstrap: str,
    topic: str,
    replay_redis_url: str,
    replay_redis: Redis,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=150)
    delivery = shuffled_with_duplicates(events)
    await produce(kafka_bootstrap, topic, delivery)
    await produce_raw(kafka_bootstrap, topic, [(b"01JDQ8Z3M4W8K2V7T6R5N4P3Q2", b"{not json")])
    env = projector_env(kafka_bootstrap, topic, replay_redis_url, "rebuilt")

    out = ok(replay(env, "build", "--version", "rebuilt", "--from-beginning"))

    await assert_projection_equals_fold(replay_redis, "rebuilt", events)
    assert "1 poison skipped" in out
    records = len(delivery) + 1
    ends = await end_offsets(kafka_bootstrap, topic, records)
    assert await committed_offsets(kafka_bootstrap, topic, "jobs-projector.rebuilt") == ends
    # The live projector continues from the build's offsets with the events that came after.
    later = job_events(jobs=20, tenant_ids=("initech",))
    await produce(kafka_bootstrap, topic, later)
    processes.append(spawn(env, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, "rebuilt", records + len(later))
    await assert_projection_equals_fold(replay_redis, "rebuilt", events + later)


async def test_build_refuses_a_version_whose_projector_is_running(
    kafka_bootstrap: str,
    topic: str,
    replay_redis_url: str,
    replay_redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=30)
    await produce(kafka_bootstrap, topic, events)
    env = projector_env(kafka_bootstrap, topic, replay_redis_url, version)
    processes.append(spawn(env, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(events))

    done = await asyncio.to_thread(replay, env, "build", "--version", version, "--from-beginning")

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"group jobs-projector.{version} has members" in done.stdout


async def test_promote_refuses_an_empty_or_lagging_version_and_rollback_returns(
    kafka_bootstrap: str,
    topic: str,
    replay_redis_url: str,
    replay_redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    old, new = f"{version}-old", f"{version}-new"  # groups of this test alone
    events = job_events(jobs=10)
    await produce(kafka_bootstrap, topic, events)
    env = projector_env(kafka_bootstrap, topic, replay_redis_url, old)

    empty = replay(env, "promote", "never-built")
    assert empty.returncode == 1
    assert "has no jobs" in empty.stdout
    ok(replay(env, "build", "--version", old, "--from-beginning"))
    ok(replay(env, "build", "--version", new, "--from-beginning"))
    unfollowed = replay(env, "promote", old)
    assert unfollowed.returncode == 1
    assert f"no running projector writes version {old}" in unfollowed.stdout
    old_projector = spawn(env, tmp_path, "projector-old")
    processes.append(old_projector)
    new_env = projector_env(kafka_bootstrap, topic, replay_redis_url, new)
    processes.append(spawn(new_env, tmp_path, "projector-new"))
    await eventually(lambda: running(replay_redis, old, new), 30, "both projectors beating")
    ok(replay(env, "promote", old))
    assert f"{old} -> {new}" in ok(replay(env, "promote", new))
    assert await replay_redis.get(ACTIVE_VERSION_KEY) == new.encode()
    # The old projector stops, more events arrive: the old version's group lags.
    old_projector.stop()
    later = job_events(jobs=5, tenant_ids=("initech",))
    await produce(kafka_bootstrap, topic, later)
    await wait_until_caught_up(kafka_bootstrap, topic, new, len(events) + len(later))
    lagging = replay(env, "promote", old, "--max-lag", "0")
    assert lagging.returncode == 1
    assert "lags by" in lagging.stdout
    assert f"no running projector writes version {old}" in lagging.stdout
    # Rolling back to the stopped version would serve a dead keyspace: new jobs would be 404.
    dead = replay(env, "rollback")
    assert dead.returncode == 1
    assert f"no running projector writes version {old}" in dead.stdout
    assert await replay_redis.get(ACTIVE_VERSION_KEY) == new.encode()
    status = ok(replay(env, "status"))
    lines = {line.split()[0]: line for line in status.splitlines()[1:]}
    assert "(active)" in lines[new]
    assert "(previous)" in lines[old]
    assert lines[old].split()[2] == str(len({(e.tenant_id, e.job_id) for e in events}))
    forced = ok(replay(env, "promote", old, "--max-lag", "0", "--force"))
    assert f"{new} -> {old}" in forced
    assert "--force: promoting although group" in forced, "--force says what it overrides"
    assert f"{old} -> {new}" in ok(replay(env, "rollback"))
    assert await replay_redis.get(ACTIVE_VERSION_KEY) == new.encode()
    assert await replay_redis.get(PREVIOUS_VERSION_KEY) == old.encode()


async def running(redis: Redis, *versions: str) -> bool:
    return all([await redis.keys(f"projection:projector:{v}:*") for v in versions])


# --- the runbook ---------------------------------------------------------------------------


class Reader:
    """Reads jobs over HTTP in a loop and keeps every answer that is not a 200."""

    def __init__(self, base_url: str, jobs: list[tuple[str, str]]) -> None:
        self.base_url = base_url
        self.jobs = jobs
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
            while True:
                for tenant, job_id in self.jobs:
                    try:
                        answer = await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant))
                        self.statuses[answer.status_code] += 1
                        if answer.status_code != 200:
                            self.failures.append(f"{job_id}: {answer.status_code} {answer.text}")
                    except httpx.HTTPError as error:
                        self.failures.append(f"{job_id}: {type(error).__name__} {error}")
                    await asyncio.sleep(0.005)


def auth(tenant: str) -> dict[str, str]:
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


async def status_of(base_url: str, tenant: str, job_id: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant))
        return answer.status_code


async def produce_slowly(bootstrap: str, topic: str, events: list[JobEvent]) -> None:
    for start in range(0, len(events), 20):
        await produce(bootstrap, topic, events[start : start + 20])
        await asyncio.sleep(0.05)


async def test_the_runbook_rebuild_verify_promote_rollback_drop_never_fails_a_read(
    stack: Stack,
    kafka_bootstrap: str,
    topic: str,
    replay_redis_url: str,
    replay_redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    first = job_events(jobs=200)
    arriving = job_events(jobs=100, tenant_ids=("initech",))
    v1, v2 = f"{version}-1", f"{version}-2"  # groups of this test alone
    v1_env = projector_env(kafka_bootstrap, topic, replay_redis_url, v1)
    v2_env = projector_env(kafka_bootstrap, topic, replay_redis_url, v2)
    await produce(kafka_bootstrap, topic, first)
    v1_projector = spawn(v1_env, tmp_path, "projector-v1")
    processes.append(v1_projector)
    await wait_until_caught_up(kafka_bootstrap, topic, v1, len(first))
    ok(await asyncio.to_thread(replay, v1_env, "promote", v1))
    api_env = {**stack.env(), "REDIS_URL": replay_redis_url, "JWT_SECRET": SECRET}
    api = start_api(api_env, tmp_path)
    processes.append(api)
    base_url = f"http://127.0.0.1:{api.port}"
    jobs = sorted({(e.tenant_id, e.job_id) for e in first})
    damaged, read = jobs[0], jobs[1:60]
    reader = Reader(base_url, read)
    reader.start()
    try:
        # Rebuild v2 beside v1 while v1 serves and events keep arriving.
        arrival = asyncio.create_task(produce_slowly(kafka_bootstrap, topic, arriving))
        ok(await asyncio.to_thread(replay, v1_env, "build", "--version", v2, "--from-beginning"))
        processes.append(spawn(v2_env, tmp_path, "projector-v2"))
        await arrival
        total = len(first) + len(arriving)
        await wait_until_caught_up(kafka_bootstrap, topic, v1, total)
        await wait_until_caught_up(kafka_bootstrap, topic, v2, total)
        await assert_projection_equals_fold(replay_redis, v2, first + arriving)

        # A job lost from v1 by hand: verify names it.
        await replay_redis.delete(job_key(v1, *damaged))
        verdict = await asyncio.to_thread(replay, v1_env, "verify", "--from", v1, "--to", v2)
        assert verdict.returncode == 1, verdict.stdout + verdict.stderr
        assert damaged[1] in verdict.stdout
        assert await status_of(base_url, *damaged) == 404

        # Promote: reads now come from v2 (where the damaged job exists).
        ok(await asyncio.to_thread(replay, v1_env, "promote", v2))
        await asyncio.sleep(1.5)  # the api trusts the active version for a second
        assert await status_of(base_url, *damaged) == 200
        # Roll back - to a version verify found to miss a job: only by force - and forward.
        refused = await asyncio.to_thread(replay, v1_env, "rollback")
        assert refused.returncode == 1
        assert f"found 1 jobs of the active version {v2} missing in {v1}" in refused.stdout
        ok(await asyncio.to_thread(replay, v1_env, "rollback", "--force"))
        await asyncio.sleep(1.5)
        assert await status_of(base_url, *damaged) == 404
        ok(await asyncio.to_thread(replay, v1_env, "promote", v2))
        await asyncio.sleep(1.5)
        assert await status_of(base_url, *damaged) == 200

        # Retire v1.
        v1_projector.stop()
        ok(await asyncio.to_thread(replay, v1_env, "drop", v1, "--yes"))
        assert [k async for k in replay_redis.scan_iter(match=job_key_pattern(v1))] == []
        await asyncio.sleep(0.5)
    finally:
        await reader.stop()
    assert reader.failures == []
    assert reader.statuses[200] > 200, reader.statuses
