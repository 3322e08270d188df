"""`replay promote` and `replay rollback`: switch the version the api reads.

The switch is one server-side call (`job_switch_version` of `projector/jobs.lua`): the active
version and the one it replaced (for `rollback`) change together, or neither does. The api
caches the active version for about a second, so reads follow within that; each read is
served whole from one version or the other, never a mix.

Both refuse a target that readers would regret, unless `--force` (which prints what it
overrides): one without jobs; one built from a topic that retention had cut (`replay build`
records it as partial); one that `replay verify` found to miss jobs the active version has;
one that no running projector writes (its jobs would stop changing) or whose group lags by
more than `--max-lag` events.
"""

from __future__ import annotations

import argparse
from typing import Any

from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    DEFAULT_VERSION,
    PREVIOUS_VERSION_KEY,
    job_key_pattern,
)
from contracts.redis_client import AnyRedis
from projector.redis_client import connect_redis
from projector.replay.topic import group_lag
from projector.replay.versions import (
    active_version,
    previous_version,
    running_projectors,
    scan_keys,
    text,
    version_meta,
)
from projector.settings import ProjectorSettings
from projector.store import SWITCH_FUNCTION, load_functions


async def promote_command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    version: str = args.version
    redis = await connect_redis(settings.redis_url)
    try:
        refusals = await refusals_of(settings, redis, version, args.max_lag)
        if refusals and not args.force:
            print(f"not promoted: {'; '.join(refusals)} (--force promotes anyway)")
            return 1
        for refusal in refusals:
            print(f"--force: promoting although {refusal}")
        replaced = await switch_to(redis, version)
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
        refusals = await refusals_of(settings, redis, previous, args.max_lag)
        if refusals and not args.force:
            print(
                f"not rolled back to {previous}: {'; '.join(refusals)} (--force rolls back anyway)"
            )
            return 1
        for refusal in refusals:
            print(f"--force: rolling back although {refusal}")
        replaced = await switch_to(redis, previous)
    finally:
        await redis.aclose()
    print(f"active version: {replaced} -> {previous} (rolled back)")
    return 0


async def switch_to(redis: AnyRedis, version: str) -> str:
    """Make `version` active and remember the one it replaced, at once; return that one."""
    await load_functions(redis)
    client: Any = redis
    replaced = await client.fcall(
        SWITCH_FUNCTION, 2, ACTIVE_VERSION_KEY, PREVIOUS_VERSION_KEY, version, DEFAULT_VERSION
    )
    return text(replaced)


async def refusals_of(
    settings: ProjectorSettings, redis: AnyRedis, version: str, max_lag: int
) -> list[str]:
    """Why readers should not be switched to `version`; empty when nothing stands against."""
    if not await _has_jobs(redis, version):
        return [f"version {version} has no jobs"]
    refusals = []
    meta = await version_meta(redis, version)
    if "partial" in meta:
        refusals.append(
            f"version {version} was built from a topic that retention had cut (first offsets "
            f"{meta['partial']}): it misses the jobs of the deleted events"
        )
    active = await active_version(redis)
    if meta.get("verified_against") == active and int(meta.get("missing_jobs", "0")):
        refusals.append(
            f"replay verify found {meta['missing_jobs']} jobs of the active version {active} "
            f"missing in {version}"
        )
    if not (await running_projectors(redis))[version]:
        refusals.append(
            f"no running projector writes version {version} (start one with "
            f"PROJECTION_VERSION={version} python -m projector run)"
        )
    group = f"{settings.kafka_group_id}.{version}"
    lag = await group_lag(settings.kafka, settings.kafka_topic, group)
    if sum(lag.values()) > max_lag:
        per_partition = ", ".join(f"partition {p}: {n}" for p, n in sorted(lag.items()) if n)
        refusals.append(
            f"group {group} lags by {sum(lag.values())} events ({per_partition}) > {max_lag}"
        )
    return refusals


async def _has_jobs(redis: AnyRedis, version: str) -> bool:
    async for _ in scan_keys(redis, job_key_pattern(version), count=100):
        return True
    return False
