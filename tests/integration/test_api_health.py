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
