"""Chaos on real parts: a stream of tens of thousands of events while projectors are killed,
Redis is frozen, a second group member comes and goes and the api restarts. At the end every
job read over HTTP equals the contract's fold of its events, the dead-letter topic holds the
injected poison records and nothing else, and the surviving processes are healthy.

The faults run one after another while the stream is being produced; each is timed so that
it lands while the projector has work in hand (the stream lasts about 20 s).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import Redis

from api.render import render_job
from contracts.events import JobEvent
from contracts.job_state import encode_state
from devstack import Stack
from devstack.processes import LocalProcess, free_port
from devstack.services import start_api
from tests.integration.projection import (
    expected_states,
    job_events,
    produce,
    produce_raw,
    projector_env,
    spawn,
)
from tests.integration.support import committed_offsets, consume_all, end_offsets, eventually

pytestmark = pytest.mark.integration

SECRET = "chaos-test-secret-0123456789abcdef01"  # noqa: S105 - a test key
JOBS = 4000
CHUNK = 1000  # events per produce call
PACE = 0.7  # seconds between chunks: about 20 s of stream


def shuffled_per_job_with_duplicates(events: list[JobEvent], seed: int) -> list[JobEvent]:
    """Every job's events in a random order, 20 % of them delivered twice, jobs interleaved."""
    rng = random.Random(seed)
    delivery = events + [e for e in events if rng.random() < 0.2]
    rng.shuffle(delivery)
    return delivery


def poison_records(jobs: list[str], count: int, seed: int) -> list[tuple[bytes, bytes | None]]:
    """Distinct poison values of several kinds, keyed by real job ids."""
    rng = random.Random(seed)
    kinds = [
        lambda n: b"{not json " + str(n).encode(),
        lambda n: json.dumps({"schema_version": 2, "n": n}).encode(),
        lambda n: json.dumps({"schema_version": 1, "seq": "five", "n": n}).encode(),
        lambda n: b"\xff\xfe" + str(n).encode(),
        lambda n: json.dumps([n]).encode(),
    ]
    return [(rng.choice(jobs).encode(), kinds[n % len(kinds)](n)) for n in range(count)]


def auth(tenant: str) -> dict[str, str]:
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def without_urls(body: Any) -> Any:
    """A body with every presigned URL blanked: they differ by signing time only."""
    if isinstance(body, dict):
        return {k: "<url>" if k == "image_url" else without_urls(v) for k, v in body.items()}
    if isinstance(body, list):
        return [without_urls(v) for v in body]
    return body


def expected_body(job_id: str, events: list[JobEvent]) -> Any:
    (state,) = expected_states(events).values()
    fields = {k.encode(): v.encode() for k, v in encode_state(state).items()}
    return without_urls(json.loads(render_job(job_id, fields, lambda bucket, key: "")))


async def test_the_stream_survives_kills_freezes_rebalances_and_restarts(
    stack: Stack,
    kafka_bootstrap: str,
    topic: str,
    unique: str,
    own_redis: LocalProcess,
    own_redis_client: Redis,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=JOBS, tenant_ids=("acme", "globex", "initech"))
    delivery = shuffled_per_job_with_duplicates(events, seed=3)
    job_ids = sorted({e.job_id for e in events})
    poison = poison_records(job_ids, count=60, seed=4)
    env = projector_env(kafka_bootstrap, topic, f"redis://127.0.0.1:{own_redis.port}/0", "v1") | {
        "KAFKA_GROUP_ID": f"chaos-{unique}",
        "BATCH_MAX_RECORDS": "500",
    }
    group = f"chaos-{unique}.v1"
    api_port = free_port()
    api_env = {**stack.env(), "REDIS_URL": env["REDIS_URL"], "JWT_SECRET": SECRET}

    projector_a = spawn(env, tmp_path, "projector-a")
    processes.append(projector_a)
    processes.append(start_api(api_env, tmp_path, api_port))

    async def stream() -> None:
        chunks = [delivery[i : i + CHUNK] for i in range(0, len(delivery), CHUNK)]
        poison_per_chunk = [poison[i :: len(chunks)] for i in range(len(chunks))]
        for chunk, bad in zip(chunks, poison_per_chunk, strict=True):
            await produce(kafka_bootstrap, topic, chunk)
            await produce_raw(kafka_bootstrap, topic, bad)
            await asyncio.sleep(PACE)

    async def progress() -> int:
        return sum((await committed_offsets(kafka_bootstrap, topic, group)).values())

    producing = asyncio.create_task(stream())
    seen: list[str] = []
    # 1. Kill the projector with work in hand, restart it.
    await eventually(lambda: _above(progress, 2000), 60, "first progress")
    projector_a.process.kill()
    projector_a.process.wait(timeout=10)
    projector_a = spawn(env, tmp_path, "projector-a2")
    processes.append(projector_a)
    seen.append("SIGKILL of the projector, restarted")
    # 2. Freeze Redis for several seconds, past the projector's socket timeout.
    await asyncio.sleep(3)
    own_redis.pause()
    await asyncio.sleep(6)
    own_redis.resume()
    seen.append("Redis frozen 6 s")
    # 3. A second group member comes, takes partitions, and goes.
    projector_b = spawn(env, tmp_path, "projector-b")
    processes.append(projector_b)
    await asyncio.sleep(8)
    projector_b.stop()
    seen.append("second member joined for 8 s, then stopped")
    # 4. Restart the api on its port.
    processes[1].stop()
    processes[1] = start_api(api_env, tmp_path, api_port)
    seen.append("api restarted")
    await producing

    total = len(delivery) + len(poison)
    ends = await end_offsets(kafka_bootstrap, topic, total)

    async def caught_up() -> bool:
        committed = await committed_offsets(kafka_bootstrap, topic, group)
        return all(committed.get(p) == end for p, end in ends.items())

    await eventually(caught_up, 120, f"group {group} committing {ends}")

    # Every job over HTTP equals the fold of its events.
    by_job: dict[tuple[str, str], list[JobEvent]] = {}
    for e in events:
        by_job.setdefault((e.tenant_id, e.job_id), []).append(e)
    limit = asyncio.Semaphore(16)
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:

        async def check(tenant: str, job_id: str, job: list[JobEvent]) -> None:
            async with limit:
                answer = await client.get(f"/v1/jobs/{job_id}", headers=auth(tenant))
            if answer.status_code != 200:
                wrong.append(f"{tenant}/{job_id}: {answer.status_code}")
            elif without_urls(answer.json()) != expected_body(job_id, job):
                wrong.append(f"{tenant}/{job_id}: {answer.text[:300]}")

        await asyncio.gather(*(check(t, j, job) for (t, j), job in by_job.items()))
    assert wrong == [], f"{len(wrong)} jobs differ, e.g. {wrong[:3]}"

    # The dead-letter topic holds the poison records, each at least once, and nothing else.
    dead = await consume_all(kafka_bootstrap, f"{topic}.dlq", 10**9, timeout=10)  # all of it
    dead_values = {record.value for record in dead}
    assert dead_values == {value for _, value in poison}
    assert all(dict(r.headers)["dlq.topic"] == topic.encode() for r in dead)

    # The survivors are healthy: the projector runs, the api answers.
    assert projector_a.process.poll() is None, projector_a.log_tail()
    assert processes[1].process.poll() is None
    print(f"faults: {'; '.join(seen)}; {len(dead) - len(poison)} duplicate dead letters")


async def _above(progress: Any, count: int) -> bool:
    done: int = await progress()
    return done >= count
