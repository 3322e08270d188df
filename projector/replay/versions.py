"""What Redis holds: projection versions, their job keys, the active and previous version,
what the tools recorded of a version, and the projectors that write one.

A version is the keyspace `job:<version>:*` (contracts.job_state.job_key). The api reads the
version named by `projection:active` (the default version when unset); `promote` remembers
the one it replaced for `rollback`, in the same step (`projector.replay.promote`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    DEFAULT_VERSION,
    PREVIOUS_VERSION_KEY,
    PROJECTOR_KEY_PREFIX,
    job_of_key,
    version_meta_key,
    version_of_projector_key,
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


async def running_projectors(redis: AnyRedis) -> Counter[str]:
    """The projectors whose heartbeat is fresh, per version they write
    (`projector.heartbeat`)."""
    running: Counter[str] = Counter()
    async for keys in scan_keys(redis, f"{PROJECTOR_KEY_PREFIX}*", 100):
        for key in keys:
            running[version_of_projector_key(key)] += 1
    return running


async def version_meta(redis: AnyRedis, version: str) -> dict[str, str]:
    """What the tools recorded of a version: `partial` (the first offsets of a build from a
    topic cut by retention), `verified_against` and `missing_jobs` (the last verify)."""
    client: Any = redis
    raw: dict[bytes, bytes] = await client.hgetall(version_meta_key(version))
    return {text(name): text(value) for name, value in raw.items()}


async def record_meta(redis: AnyRedis, version: str, **fields: str) -> None:
    client: Any = redis
    await client.hset(version_meta_key(version), mapping=fields)


async def forget_meta(redis: AnyRedis, version: str, *names: str) -> None:
    await redis.hdel(version_meta_key(version), *names)
