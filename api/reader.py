"""Reads a job from the active projection: from the near cache (`api.near_cache`) when it
holds the job, else with one Redis round trip.

The active version (`projection:active`, absent: v1) is cached for a second, so a promotion
reaches every reader within that time without costing a second round trip per request.
On a Redis Cluster the same commands go to the node that owns the key's slot (the job key's
hash tag; `projection:active` is a plain key of its own slot).

Load waits, it does not fail: at most `REDIS_SLOTS` commands are sent at once (fewer than the
pool's connections, which redis-py's asyncio pool refuses to exceed rather than wait for),
and a command waits up to `SLOT_WAIT_SECONDS` for its turn. A storm of long-polls woken by
one event then queues for a few milliseconds instead of answering 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from redis.exceptions import RedisError

from api.near_cache import NearCache
from api.redis_client import POOL_CONNECTIONS, LazyRedis
from contracts.job_state import ACTIVE_VERSION_KEY, DEFAULT_VERSION, job_key

# Commands at once, below the pool's size (beyond it redis-py refuses rather than waits).
REDIS_SLOTS = POOL_CONNECTIONS - 16
SLOT_WAIT_SECONDS = 10.0


class RedisBusy(RedisError):
    """No turn for a command within SLOT_WAIT_SECONDS: as good as unavailable (503)."""


@dataclass(frozen=True, slots=True)
class StoredJobFields:
    version: str
    fields: dict[bytes, bytes]


class JobReader:
    def __init__(
        self,
        redis: LazyRedis,
        version_ttl: float = 1.0,
        tracer: Tracer | None = None,
        cache: NearCache | None = None,
        observe_read: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.redis = redis
        self.cache = cache
        self._observe_read = observe_read  # seconds of each Redis read
        self._tracer = tracer  # a child span per job read from Redis, under the request's
        self._version_ttl = version_ttl
        self._version = DEFAULT_VERSION
        self._version_until = 0.0
        self._slots = asyncio.Semaphore(REDIS_SLOTS)

    async def _take_turn(self) -> None:
        """A slot for one command: at once while one is free (the common case, no timer),
        else within SLOT_WAIT_SECONDS. The caller releases it."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(SLOT_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise RedisBusy(f"no Redis connection free within {SLOT_WAIT_SECONDS:.0f} s") from None

    async def active_version(self) -> str:
        now = time.monotonic()
        if now >= self._version_until:
            redis = self.redis.client or await self.redis.connect()
            await self._take_turn()
            try:
                raw: Any = await redis.get(ACTIVE_VERSION_KEY)
            finally:
                self._slots.release()
            self._version = raw.decode() if raw else DEFAULT_VERSION
            self._version_until = now + self._version_ttl
        return self._version

    async def ping(self) -> None:
        """Raises the client's error when Redis does not answer (on a cluster: the node of
        `projection:active`, the key every read needs)."""
        redis = self.redis.client or await self.redis.connect()
        await self._take_turn()
        try:
            await redis.exists(ACTIVE_VERSION_KEY)
        finally:
            self._slots.release()

    async def read(self, tenant_id: str, job_id: str) -> StoredJobFields:
        """The job's hash fields (empty when absent, or when it is another tenant's)."""
        version = await self.active_version()
        key = job_key(version, tenant_id, job_id)
        cache = self.cache
        if cache is None:
            return StoredJobFields(version, await self._read(key))
        fields = cache.lookup(key)
        if fields is None:
            ticket = cache.ticket(key)  # before the read is sent
            fields = await self._read(key)
            cache.fill(key, ticket, fields)
        return StoredJobFields(version, fields)

    async def _read(self, key: str) -> dict[bytes, bytes]:
        if self._tracer is None:
            return await self._hgetall(key)
        with self._tracer.start_as_current_span(
            "redis HGETALL", kind=SpanKind.CLIENT, attributes={"db.system.name": "redis"}
        ):
            return await self._hgetall(key)

    async def _hgetall(self, key: str) -> dict[bytes, bytes]:
        redis = self.redis.client or await self.redis.connect()
        started = time.perf_counter()
        await self._take_turn()
        try:
            reply: Any = await redis.hgetall(key)
        finally:
            self._slots.release()
        self._observe_read(time.perf_counter() - started)
        fields: dict[bytes, bytes] = reply  # the client answers bytes (no decode_responses)
        return fields
