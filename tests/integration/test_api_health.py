"""The api's health endpoints against a Redis that goes away and comes back (CONTRACT §5)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from devstack import Stack
from devstack.processes import LocalProcess, start_redis
from devstack.services import start_api
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

SECRET = "health-test-secret-0123456789abcdef"  # noqa: S105 - a test key


async def status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code


async def test_readyz_follows_redis_and_healthz_only_the_process(
    stack: Stack, own_redis: LocalProcess, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    env = {**stack.env(), "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    api = start_api(env | {"JWT_SECRET": SECRET}, tmp_path)
    processes.append(api)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
        assert await status(client, "/readyz") == 200  # no token needed
        assert await status(client, "/healthz") == 200

        own_redis.stop()
        started = time.monotonic()
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["detail"]["code"] == "UNAVAILABLE"
        assert time.monotonic() - started < 5
        assert await status(client, "/healthz") == 200

        processes.append(start_redis(tmp_path, port=own_redis.port))

        async def ready() -> bool:
            return await status(client, "/readyz") == 200

        await eventually(ready, 10, "/readyz answering 200 again")


async def test_one_access_line_per_request_without_token_or_query_and_docs_that_can_be_off(
    stack: Stack, own_redis: LocalProcess, tmp_path: Path, processes: list[LocalProcess]
) -> None:
    import json

    import jwt

    env = {**stack.env(), "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    api = start_api(env | {"JWT_SECRET": SECRET, "API_DOCS": "false"}, tmp_path)
    processes.append(api)
    token = jwt.encode({"tenant_id": "acme", "exp": 2_000_000_000}, SECRET, "HS256")
    job = "01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert await status(client, path) == 401, f"{path}: no longer public, 401 first"
            assert (await client.get(path, headers=headers)).status_code == 404, path
        assert (
            await client.get(f"/v1/jobs/{job}?wait=0&after_seq=7", headers=headers)
        ).status_code == 404
        assert (await client.get(f"/v1/jobs/{job}")).status_code == 401
    api.stop()  # its last lines are flushed as it stops
    text = api.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if "api.access" in line]
    reads = [line for line in lines if line["route"] == "/v1/jobs/{id}"]
    assert [(r["status"], r["tenant"]) for r in reads] == [(404, "acme"), (401, None)]
    assert all(r["method"] == "GET" and r["latency_ms"] >= 0 for r in reads)
    assert {"timestamp", "level", "logger", "message"} <= set(reads[0])
    assert token not in text
    assert "after_seq" not in text, "no query string in the log"
    assert job not in text, "no path: the route template only"
