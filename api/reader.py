"""Reads a job from the active projection: one Redis round trip per request.

The active version (`projection:active`, absent: v1) is cached for a second, so a promotion
reaches every reader within that time without costing a second round trip per request.
On a Redis Cluster the same commands go to the node that owns the key's slot (the job key's
hash tag; `projection:active` is a plain key of its own slot).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from api.redis_client import LazyRedis
from contracts.job_state import ACTIVE_VERSION_KEY, DEFAULT_VERSION, job_key


@dataclass(frozen=True, slots=True)
class StoredJobFields:
    version: str
    fields: dict[bytes, bytes]


class JobReader:
    def __init__(self, redis: LazyRedis, version_ttl: float = 1.0) -> None:
        self.redis = redis
        self._version_ttl = version_ttl
        self._version = DEFAULT_VERSION
        self._version_until = 0.0

    async def active_version(self) -> str:
        now = time.monotonic()
        if now >= self._version_until:
            redis = self.redis.client or await self.redis.connect()
            raw: Any = await redis.get(ACTIVE_VERSION_KEY)
            self._version = raw.decode() if raw else DEFAULT_VERSION
            self._version_until = now + self._version_ttl
        return self._version

    async def ping(self) -> None:
        """Raises the client's error when Redis does not answer (on a cluster: the node of
        `projection:active`, the key every read needs)."""
        redis = self.redis.client or await self.redis.connect()
        await redis.exists(ACTIVE_VERSION_KEY)

    async def read(self, tenant_id: str, job_id: str) -> StoredJobFields:
        """The job's hash fields (empty when absent, or when it is another tenant's)."""
        version = await self.active_version()
        redis = self.redis.client or await self.redis.connect()
        fields: Any = await redis.hgetall(job_key(version, tenant_id, job_id))
        return StoredJobFields(version, fields)
