"""What Redis holds: projection versions, their job keys, the active and previous version.

A version is the keyspace `job:<version>:*` (contracts.job_state.job_key). The api reads the
version named by `projection:active` (the default version when unset); `promote` remembers
the one it replaced in `projection:previous` for `rollback`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    DEFAULT_VERSION,
    PREVIOUS_VERSION_KEY,
    job_of_key,
)
from contracts.redis_client import AnyRedis

SCAN_COUNT = 1000


def text(value: bytes | str) -> str:
    """A Redis reply (bytes) or a name (str) as text."""
    return value.decode() if isinstance(value, bytes) else value


async def active_version(redis: AnyRedis) -> str:
    value = await redis.get(ACTIVE_VERSION_KEY)
    return DEFAULT_VERSION if value is None else text(value)


async def previous_version(redis: AnyRedis) -> str | None:
    value = await redis.get(PREVIOUS_VERSION_KEY)
    return None if value is None else text(value)


async def scan_keys(
    redis: AnyRedis, pattern: str, count: int = SCAN_COUNT
) -> AsyncIterator[list[bytes]]:
    """Keys matching `pattern` in batches of about `count` (every primary on a cluster).
    A key present during the whole scan is returned at least once (SCAN's guarantee)."""
    batch: list[bytes] = []
    client: Any = redis
    async for key in client.scan_iter(match=pattern, count=count):
        batch.append(key)
        if len(batch) >= count:
            yield batch
            batch = []
    if batch:
        yield batch


async def jobs_per_version(redis: AnyRedis) -> Counter[str]:
    """Every version present in Redis with its number of jobs (one pass over `job:*`)."""
    counts: Counter[str] = Counter()
    async for keys in scan_keys(redis, "job:*"):
        for key in keys:
            counts[job_of_key(key)[0]] += 1
    return counts
