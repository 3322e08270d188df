"""`replay status`: every version in Redis, its jobs, its group's lag, the projectors that write
it (their heartbeats), and which one is active."""

from __future__ import annotations

import argparse

from rich import box
from rich.console import Console
from rich.table import Table

from projector.redis_client import connect_redis
from projector.replay.topic import group_lag
from projector.replay.versions import (
    active_version,
    jobs_per_version,
    previous_version,
    running_projectors,
)
from projector.settings import ProjectorSettings


async def command(settings: ProjectorSettings, args: argparse.Namespace) -> int:
    redis = await connect_redis(settings.redis_url)
    try:
        active = await active_version(redis)
        previous = await previous_version(redis)
        jobs = await jobs_per_version(redis)
        running = await running_projectors(redis)
    finally:
        await redis.aclose()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("version")
    table.add_column("jobs", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("lag per partition")
    table.add_column("projectors", justify="right")
    for version in sorted(set(jobs) | set(running) | {active}):
        group = f"{settings.kafka_group_id}.{version}"
        lag = await group_lag(settings.kafka, settings.kafka_topic, group)
        per_partition = " ".join(f"{p}:{n}" for p, n in sorted(lag.items()))
        mark = " (active)" if version == active else " (previous)" if version == previous else ""
        table.add_row(
            version + mark,
            f"{jobs[version]:,}",
            f"{sum(lag.values()):,}",
            per_partition,
            str(running[version]),
        )
    Console(width=200).print(table)
    return 0
