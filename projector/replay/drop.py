"""`replay drop V`: delete a retired projection version, never the active one.

The keys `job:V:*` are found with SCAN and deleted with UNLINK, a batch of `BATCH` keys per
call: SCAN never blocks the server the way KEYS would, and UNLINK frees the memory in a
background thread, so the live version keeps being served while a large one is dropped. On a
cluster the keys of one UNLINK must share a slot: a batch is split by slot into one pipeline.

Refused for the active version, and - unless `--force` - for a version a running projector
still writes (its heartbeat, `projector.heartbeat`): the keys it writes would come back. The
active version is checked again before each batch, so a `promote` of V while it is being
dropped stops the drop. When the previous version names V it is forgotten first, so that
`rollback` can never switch reads to a version that is being, or has been, deleted. V's
consumer group stays in Kafka; a later rebuild under the same name starts from its committed
offsets unless told otherwise. It asks on a terminal; `--yes` drops without asking.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from contracts.job_state import PREVIOUS_VERSION_KEY, job_key_pattern
from contracts.redis_client import AnyRedis
from projector.redis_client import connect_redis
from projector.replay import versions
from projector.replay.confirm import confirmed
from projector.replay.progress import Progress
from projector.settings import ProjectorSettings

BATCH = versions.SCAN_COUNT


def unlink_groups(keys: list[bytes], cluster: bool) -> list[list[bytes]]:
    """The UNLINK calls of a batch: one on a server, one per slot on a cluster."""
    if not cluster:
        return [keys]
    by_slot: dict[int, list[bytes]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(key), []).append(key)
    return list(by_slot.values())


class BecameActive(Exception):
    """The version was promoted while it was being dropped."""


async def unlink_version(redis: AnyRedis, version: str, progress: Progress) -> int:
    """Delete every job key of `version`; returns how many were removed. Raises BecameActive
    when the version is the active one before a batch."""
    cluster = isinstance(redis, RedisCluster)
    removed = 0
    row = f"job:{version}:*"
    progress.set_total(row, None)  # the row's clock starts with the scan
    async for keys in versions.scan_keys(redis, job_key_pattern(version), BATCH):
        if await versions.active_version(redis) == version:
            raise BecameActive()
        pipe: Any = redis.pipeline(transaction=False)
        for group in unlink_groups(keys, cluster):
            # Queued with execute_command: a cluster pipeline's `unlink()` is a coroutine
            # (it queues only when awaited), a server pipeline's is not.
            pipe.execute_command("UNLINK", *group)
        removed += sum(await pipe.execute(raise_on_error=True))
        progress.update(row, removed)
    return removed


async def forget_previous(redis: AnyRedis, version: str) -> None:
    if await versions.previous_version(redis) == version:
        await redis.delete(PREVIOUS_VERSION_KEY)
        print(f"deleted {PREVIOUS_VERSION_KEY} (it named {version}): no rollback to it")


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    version: str = args.version
    redis = await connect_redis(settings.redis_url)
    try:
        if version == await versions.active_version(redis):
            print(f"refused: {version} is the active version; promote another one first")
            return 1
        writers = (await versions.running_projectors(redis))[version]
        if writers and not args.force:
            print(
                f"refused: {writers} running projector(s) write version {version}; stop them "
                "first (--force drops anyway: the keys they write come back)"
            )
            return 1
        if writers:
            print(f"--force: dropping although {writers} running projector(s) write {version}")
        if not confirmed(f"delete every job of version {version}?", args.yes):
            return 1
        await forget_previous(redis, version)
        progress = Progress("keys")
        started = time.monotonic()
        try:
            removed = await unlink_version(redis, version, progress)
        except BecameActive:
            print(f"stopped: {version} became the active version while it was being dropped")
            return 1
        finally:
            progress.close()
        seconds = time.monotonic() - started
    finally:
        await redis.aclose()
    if not removed:
        print(f"nothing to drop: no key matches job:{version}:*")
        return 0
    rate = removed / max(seconds, 1e-9)
    print(f"dropped {version}: {removed:,} keys removed in {seconds:.1f} s, {rate:,.0f} keys/s")
    return 0
