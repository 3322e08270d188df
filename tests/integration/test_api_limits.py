"""Long-poll storms against a real api process: load waits, it never fails (CONTRACT §3).

Thousands of `?wait=20&after_seq=1` polls are held at once, then woken by one event: every
answer is a 200 with the new seq - more polls than the Redis pool has connections - or, past
`API_MAX_WAITERS(_PER_TENANT)`, a 429 with `Retry-After` at once; never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import pytest

from devstack import Stack
from devstack.data import event, ulid
from devstack.processes import LocalProcess
from devstack.services import start_api
from projector.fold import fold
from projector.redis_client import connect_redis
from projector.store import ProjectionStore, load_functions
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

SECRET = "limits-test-secret-0123456789abcdef0123"  # noqa: S105 - a test key
VERSION = "v1"


def token(tenant: str) -> str:
    return jwt.encode({"tenant_id": tenant, "exp": 2_000_000_000}, SECRET, "HS256")


async def merge(redis_url: str, events: list[Any]) -> None:
    """Merge events as the projector does (the merge announces the change)."""
    client = await connect_redis(redis_url)
    try:
        await load_functions(client)
        by_job: dict[tuple[str, str], list[Any]] = {}
        for each in events:
            by_job.setdefault((each.tenant_id, each.job_id), []).append(each)
        await ProjectionStore(client, VERSION).merge({ref: fold(e) for ref, e in by_job.items()})
    finally:
        await client.aclose()


async def poll(port: int, tenant: str, job_id: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        request = (
            f"GET /v1/jobs/{job_id}?wait=20&after_seq=1 HTTP/1.1\r\nHost: api\r\n"
            f"Authorization: Bearer {token(tenant)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0][9:12]), {k.lower(): v for k, v in headers.items()}, body
    finally:
        writer.close()


async def held(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        text = (await reader.read()).decode()
    finally:
        writer.close()
    line = next(line for line in text.splitlines() if line.startswith("api_long_polls "))
    return int(float(line.split()[1]))


@pytest.fixture
def storm_db(own_redis: LocalProcess) -> str:
    return f"redis://127.0.0.1:{own_redis.port}/0"


def api_for(
    stack: Stack, redis_url: str, tmp_path: Path, processes: list[LocalProcess], **limits: str
) -> int:
    env = stack.env() | {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, **limits}
    processes.append(start_api(env, tmp_path))
    return processes[-1].port


async def storm(
    port: int, redis_url: str, polls: list[tuple[str, str]], waiting: int
) -> list[tuple[int, dict[str, str], bytes]]:
    """Start `polls` (tenant, job) at once; once `waiting` of them are held, wake each job
    with its seq 2; every answer."""
    tasks = [asyncio.create_task(poll(port, tenant, job)) for tenant, job in polls]

    async def all_held() -> bool:
        return await held(port) >= waiting

    await eventually(all_held, 60, f"{waiting} long-polls held")
    jobs = sorted(set(polls))
    await merge(redis_url, [event(tenant_id=t, job_id=j, seq=2, kind="stage") for t, j in jobs])
    return await asyncio.wait_for(asyncio.gather(*tasks), 60)


async def stored_jobs(redis_url: str, jobs: list[tuple[str, str]]) -> None:
    await merge(redis_url, [event(tenant_id=t, job_id=j, seq=1, kind="queued") for t, j in jobs])


def seqs(answers: list[tuple[int, dict[str, str], bytes]]) -> Counter[Any]:
    return Counter(
        (status, json.loads(body)["latest_event"]["seq"] if status == 200 else None)
        for status, _headers, body in answers
    )


async def test_two_thousand_polls_on_one_job_all_get_the_new_seq(
    stack: Stack, storm_db: str, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    job = ("acme", ulid())
    await stored_jobs(storm_db, [job])
    port = api_for(stack, storm_db, tmp_path, processes, API_MAX_WAITERS_PER_TENANT="5000")
    answers = await storm(port, storm_db, [job] * 2000, waiting=2000)
    assert seqs(answers) == Counter({(200, 2): 2000})


async def test_a_thousand_polls_over_two_hundred_jobs_all_get_the_new_seq(
    stack: Stack, storm_db: str, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    jobs = [("acme", ulid()) for _ in range(200)]
    await stored_jobs(storm_db, jobs)
    port = api_for(stack, storm_db, tmp_path, processes)  # the default limits
    answers = await storm(port, storm_db, jobs * 5, waiting=1000)
    assert seqs(answers) == Counter({(200, 2): 1000})


async def test_polls_beyond_the_limits_get_429_with_retry_after_and_the_others_the_new_seq(
    stack: Stack, storm_db: str, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    acme, globex = ("acme", ulid()), ("globex", ulid())
    await stored_jobs(storm_db, [acme, globex])
    limits = {"API_MAX_WAITERS": "50", "API_MAX_WAITERS_PER_TENANT": "30"}
    port = api_for(stack, storm_db, tmp_path, processes, **limits)
    answers = await storm(port, storm_db, [acme] * 40 + [globex] * 30, waiting=50)
    assert seqs(answers) == Counter({(200, 2): 50, (429, None): 20})
    for status, headers, body in answers:
        if status == 429:
            assert headers["retry-after"] == "1"
            assert json.loads(body)["detail"]["code"] == "TOO_MANY_REQUESTS"
