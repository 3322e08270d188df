"""`replay promote` and `replay rollback`: switch the version the api reads.

The switch is one `SET projection:active <version> GET`: atomic, and it returns the version
it replaced, which is then kept in `projection:previous` for `rollback`. The api caches the
active version for about a second, so reads follow within that; each read is served whole
from one version or the other, never a mix.
"""

from __future__ import annotations

import argparse

from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    DEFAULT_VERSION,
    PREVIOUS_VERSION_KEY,
    job_key_pattern,
)
from contracts.redis_client import AnyRedis
from projector.redis_client import connect_redis
from projector.replay.topic import group_lag
from projector.replay.versions import previous_version, scan_keys
from projector.settings import ProjectorSettings


async def promote_command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    version: str = args.version
    redis = await connect_redis(settings.redis_url)
    try:
        if not args.force:
            refusal = await _refusal(settings, redis, version, args.max_lag)
            if refusal:
                print(f"not promoted: {refusal} (--force promotes anyway)")
                return 1
        replaced = await _activate(redis, version)
    finally:
        await redis.aclose()
    print(f"active version: {replaced} -> {version} (rollback returns to {replaced})")
    return 0


async def rollback_command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    redis = await connect_redis(settings.redis_url)
    try:
        previous = await previous_version(redis)
        if previous is None:
            print("no previous version to roll back to")
            return 1
        if not await _has_jobs(redis, previous):
            print(f"not rolled back: version {previous} has no jobs (dropped?)")
            return 1
        replaced = await _activate(redis, previous)
    finally:
        await redis.aclose()
    print(f"active version: {replaced} -> {previous} (rolled back)")
    return 0


async def _activate(redis: AnyRedis, version: str) -> str:
    """Make `version` active; remember and return the one it replaced."""
    old: bytes | None = await redis.set(ACTIVE_VERSION_KEY, version, get=True)  # type: ignore[assignment]  # GET returns the old value
    replaced = DEFAULT_VERSION if old is None else old.decode()
    if replaced != version:
        await redis.set(PREVIOUS_VERSION_KEY, replaced)
    return replaced


async def _refusal(
    settings: ProjectorSettings, redis: AnyRedis, version: str, max_lag: int
) -> str | None:
    if not await _has_jobs(redis, version):
        return f"version {version} has no jobs"
    group = f"{settings.kafka_group_id}.{version}"
    lag = await group_lag(settings.kafka_bootstrap_servers, settings.kafka_topic, group)
    if sum(lag.values()) > max_lag:
        per_partition = ", ".join(f"partition {p}: {n}" for p, n in sorted(lag.items()) if n)
        return f"group {group} lags by {sum(lag.values())} events ({per_partition}) > {max_lag}"
    return None


async def _has_jobs(redis: AnyRedis, version: str) -> bool:
    async for _ in scan_keys(redis, job_key_pattern(version), count=100):
        return True
    return False
