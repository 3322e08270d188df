"""`replay status`: every version in Redis, its jobs, its group's lag, and the active one."""

from __future__ import annotations

import argparse

from projector.redis_client import connect_redis
from projector.replay.topic import group_lag
from projector.replay.versions import active_version, jobs_per_version, previous_version
from projector.settings import ProjectorSettings


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    redis = await connect_redis(settings.redis_url)
    try:
        active = await active_version(redis)
        previous = await previous_version(redis)
        jobs = await jobs_per_version(redis)
    finally:
        await redis.aclose()
    print(f"{'version':<34} {'jobs':>10} {'lag':>10}  lag per partition")
    for version in sorted(set(jobs) | {active}):
        group = f"{settings.kafka_group_id}.{version}"
        lag = await group_lag(settings.kafka_bootstrap_servers, settings.kafka_topic, group)
        per_partition = " ".join(f"{p}:{n}" for p, n in sorted(lag.items()))
        mark = " (active)" if version == active else " (previous)" if version == previous else ""
        print(
            f"{version + mark:<34} {jobs[version]:>10,} {sum(lag.values()):>10,}  {per_partition}"
        )
    return 0
