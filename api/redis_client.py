"""The api's Redis client, made on first use: a cluster client when `REDIS_URL` names a node
of a Redis Cluster (`contracts.redis_client` tells which).

The api starts while Redis is away and answers 503 until it is back (CONTRACT §3), so the kind
of server is learnt from the first node that answers, not at start. Requests that arrive while
that first probe runs share it: a frozen Redis costs each of them one timeout, not one per
request queued before it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from contracts.redis_client import AnyRedis, connect_redis

# A request must not hang on a frozen or unreachable Redis: it gets a 503 within ~2 s.
REDIS_TIMEOUT_SECONDS = 1.0
# Connections per server (on a cluster, per node).
POOL_CONNECTIONS = 256
# What a request may meet when Redis is away: a server's errors, and a cluster client's
# "no node reachable" (RedisClusterException is no RedisError).
UNAVAILABLE_ERRORS = (RedisError, RedisClusterException)


def read_options() -> dict[str, Any]:
    return {
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        # One retry covers a pooled connection that went stale when Redis restarted.
        "retry": Retry(NoBackoff(), 1),
        "max_connections": POOL_CONNECTIONS,
    }


class LazyRedis:
    """`client` once a node answered; `connect()` makes it (or joins the attempt running)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: AnyRedis | None = None
        self._connecting: asyncio.Future[AnyRedis] | None = None

    async def connect(self) -> AnyRedis:
        if self.client is not None:
            return self.client
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(connect_redis(self.url, **read_options()))
            self._connecting.add_done_callback(self._connected)
        # Shielded: a request that goes away does not cancel the others' attempt.
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[AnyRedis]) -> None:
        self._connecting = None  # a failed attempt is retried by the next request
        if not attempt.cancelled() and attempt.exception() is None:
            self.client = attempt.result()

    async def aclose(self) -> None:
        if (attempt := self._connecting) is not None:
            attempt.cancel()
            await asyncio.wait([attempt])
            if not attempt.cancelled() and attempt.exception() is None:
                self.client = attempt.result()  # it won the race with the cancel
        if self.client is not None:
            await self.client.aclose()
            self.client = None
