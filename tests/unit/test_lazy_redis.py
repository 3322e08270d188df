"""The api's Redis client is made by the first request that finds a node answering: requests
arriving meanwhile share that attempt, and a failed attempt is retried by the next request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api import redis_client
from api.redis_client import LazyRedis


class FakeClient:
    closed = False

    async def aclose(self) -> None:
        self.closed = True


class FakeConnect:
    """`connect_redis` that fails `failures` times, then answers once `release` is set."""

    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures
        self.release = asyncio.Event()
        self.client: Any = FakeClient()

    async def __call__(self, url: str, **options: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise RedisConnectionError("no node answered")
        await self.release.wait()
        return self.client


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> FakeConnect:
    fake = FakeConnect()
    monkeypatch.setattr(redis_client, "connect_redis", fake)
    return fake


async def test_requests_arriving_while_connecting_share_one_attempt(connect: FakeConnect) -> None:
    lazy = LazyRedis("redis://127.0.0.1:1/0")
    waiting = [asyncio.create_task(lazy.connect()) for _ in range(3)]
    await asyncio.sleep(0)
    connect.release.set()
    assert await asyncio.gather(*waiting) == [connect.client] * 3
    assert connect.calls == 1
    assert lazy.client is connect.client
    assert await lazy.connect() is connect.client
    assert connect.calls == 1


async def test_a_failed_attempt_is_retried_by_the_next_request(connect: FakeConnect) -> None:
    connect.failures = 1
    connect.release.set()
    lazy = LazyRedis("redis://127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError):
        await lazy.connect()
    assert lazy.client is None
    assert await lazy.connect() is connect.client
    assert connect.calls == 2


async def test_a_request_that_goes_away_leaves_the_attempt_to_the_others(
    connect: FakeConnect,
) -> None:
    lazy = LazyRedis("redis://127.0.0.1:1/0")
    leaving, staying = asyncio.create_task(lazy.connect()), asyncio.create_task(lazy.connect())
    await asyncio.sleep(0)
    leaving.cancel()
    connect.release.set()
    assert await staying is connect.client
    assert leaving.cancelled()
    assert connect.calls == 1


async def test_closing_closes_the_client_and_cancels_an_attempt(connect: FakeConnect) -> None:
    lazy = LazyRedis("redis://127.0.0.1:1/0")
    pending = asyncio.create_task(lazy.connect())
    await asyncio.sleep(0)
    await lazy.aclose()
    with pytest.raises(asyncio.CancelledError):
        await pending
    connect.release.set()
    await lazy.connect()
    await lazy.aclose()
    assert connect.client.closed
    assert lazy.client is None
