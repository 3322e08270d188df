"""Scale: the projector with 1, 2 and 4 processes, and its cost per event against the batch
size and the number of jobs in a batch.

- Processes: N `python -m projector run` in one consumer group on a 4-partition topic, with
  the same events (`--events` over `--jobs`, as `bench.projector`). Once every member holds
  its share of the partitions (each process logs its assignment) the members are paused
  (SIGSTOP), the topic is filled, and they are resumed: events/s from the resume to the last
  commit - draining a full topic with every member joined, no group join in the window. A
  rebalance during the window (a member would have missed its session timeout while paused)
  is reported, not hidden. The machine's cores bound the gain: Redis and the broker share
  them with the projectors.
- Batch size and jobs per batch, in this process on a real redis-server: the projector's
  two steps per batch timed one after the other - `projector.batch.prepare` (validate, fold
  per job, pack; with the projector's garbage-collector settings) and
  `ProjectionStore.merge_packed` (one server-side merge per job, pipelined) - in µs per
  event, on fresh jobs each time so that every merge writes. The live process overlaps the
  two (a batch is prepared while the previous one is written), so its cost per event is
  below their sum; how the cost moves with the batch's shape is what this shows.
  Batch sizes at 5 events per job (lifecycles); jobs per batch at 2,000 `stage` events.
`python -m bench.scale [--events 200000 --jobs 20000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from redis.asyncio import Redis

from bench.common import (
    job_events,
    lifecycle_records,
    produce_fast,
    write_result,
)
from contracts.kafka import KafkaConnection
from devstack import create_topics, start_stack
from devstack.data import STORAGE, ulid
from devstack.processes import LocalProcess
from devstack.services import start_projector
from projector.batch import prepare, tune_garbage_collector
from projector.intake import Record
from projector.replay.topic import group_committed
from projector.store import ProjectionStore, load_functions

PARTITIONS = 4
ASSIGNED = re.compile(r"Setting newly assigned partitions (.*?) for group")
PARTITION = re.compile(r"partition=(\d+)")
EVENTS_PER_JOB = 5


# --- processes -----------------------------------------------------------------------------------


def assignments(process: LocalProcess) -> list[frozenset[int]]:
    """Every partition assignment the process logged (aiokafka's coordinator, at INFO)."""
    try:
        text = process.log_path.read_text(errors="replace")
    except OSError:
        return []
    return [frozenset(map(int, PARTITION.findall(m.group(1)))) for m in ASSIGNED.finditer(text)]


def joined(members: list[LocalProcess]) -> bool:
    """Every member holds partitions, none twice, all of them covered."""
    latest = []
    for member in members:
        if member.process.poll() is not None:
            raise RuntimeError(f"{member.name} exited:\n{member.log_tail()}")
        logged = assignments(member)
        if not logged or not logged[-1]:
            return False
        latest.append(logged[-1])
    return sum(map(len, latest)) == PARTITIONS and frozenset().union(*latest) == set(
        range(PARTITIONS)
    )


async def wait_joined(members: list[LocalProcess], timeout: float = 120.0) -> float:
    """Wait until the group holds still with every member assigned; returns the seconds."""
    started = time.monotonic()
    stable_since = None
    counts: list[int] = []
    while time.monotonic() - started < timeout:
        now_counts = [len(assignments(m)) for m in members]
        if joined(members) and now_counts == counts:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return time.monotonic() - started
        else:
            stable_since = None
        counts = now_counts
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the {len(members)} members did not all join within {timeout:.0f} s")


async def drain(
    stack_env: dict[str, str],
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    members: int,
) -> dict[str, Any]:
    """Events/s of `members` projector processes draining the filled topic."""
    topic, version = f"bench.scale.{members}", f"scale{members}"
    await create_topics(bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    env = stack_env | {"KAFKA_TOPIC": topic, "PROJECTION_VERSION": version}
    processes = [start_projector(env, workdir, f"{version}-{n}") for n in range(members)]
    try:
        join_seconds = await wait_joined(processes)
        logged = [len(assignments(p)) for p in processes]
        paused = time.monotonic()
        for process in processes:
            process.pause()
        try:
            await produce_fast(bootstrap, topic, records, PARTITIONS)
        finally:
            paused_seconds = time.monotonic() - paused
            for process in processes:
                process.resume()
        resumed = time.perf_counter()
        group = f"jobs-projector.{version}"
        while sum(
            (
                await group_committed(KafkaConnection(bootstrap_servers=bootstrap), topic, group)
            ).values()
        ) < len(records):
            if any(p.process.poll() is not None for p in processes):
                raise RuntimeError("\n".join(p.log_tail() for p in processes))
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - resumed
        return {
            "processes": members,
            "events_per_s": len(records) / seconds,
            "seconds": seconds,
            "join_seconds": join_seconds,
            "paused_seconds": paused_seconds,
            "rebalanced_during_window": [len(assignments(p)) for p in processes] != logged,
        }
    finally:
        for process in processes:
            process.stop()


async def processes_scale(
    events: int, jobs: int, counts: list[int], workdir: Path
) -> list[dict[str, Any]]:
    stack = start_stack(workdir)
    try:
        records = lifecycle_records(jobs, events // jobs)
        found = []
        for members in counts:
            found.append(await drain(stack.env(), stack.kafka_bootstrap, workdir, records, members))
            print(
                f"{members} process(es): {found[-1]['events_per_s']:,.0f} events/s "
                f"(joined in {found[-1]['join_seconds']:.1f} s)",
                flush=True,
            )
        return found
    finally:
        stack.stop()


# --- cost per event, in process ------------------------------------------------------------------


def batch_records(events: int, jobs: int, only: str | None) -> list[Record]:
    """`events` records over `jobs` new jobs, interleaved as live traffic is, each job's
    events in order: whole lifecycles, or events of kind `only`."""
    per_job = events // jobs
    kinds = None if only is None else [only] * per_job
    lifecycles = [job_events(f"tenant-{n % 50}", ulid(), per_job, kinds) for n in range(jobs)]
    interleaved = [record for step in zip(*lifecycles, strict=True) for record in step]
    return [
        ConsumerRecord("bench.scale", 0, offset, 0, 0, key, value, None, len(key), len(value), [])
        for offset, (key, value) in enumerate(interleaved)
    ]


@contextmanager
def projector_gc() -> Iterator[None]:
    """The projector process's collector settings, for the timed part only."""
    threshold = gc.get_threshold()
    tune_garbage_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def batch_cost(
    store: ProjectionStore, events: int, jobs: int, repeats: int, only: str | None = None
) -> dict[str, Any]:
    """µs per event of preparing and of merging one batch (medians over `repeats`)."""
    prepared, merged = [], []
    for _ in range(repeats):
        records = batch_records(events, jobs, only)
        with projector_gc():
            started = time.perf_counter()
            batch = prepare(records, STORAGE)
            middle = time.perf_counter()
            await store.merge_packed(batch.jobs, batch.packed)
            ended = time.perf_counter()
        assert len(batch.jobs) == jobs
        assert not batch.dead
        prepared.append((middle - started) / events * 1e6)
        merged.append((ended - middle) / events * 1e6)
    prepare_us, merge_us = statistics.median(prepared), statistics.median(merged)
    return {
        "events": events,
        "jobs": jobs,
        "prepare_us_per_event": prepare_us,
        "merge_us_per_event": merge_us,
        "us_per_event": prepare_us + merge_us,
    }


async def costs(
    sizes: list[int], job_counts: list[int], repeats: int, workdir: Path
) -> dict[str, list[dict[str, Any]]]:
    stack = start_stack(workdir)
    redis = Redis.from_url(stack.redis_url)
    try:
        await load_functions(redis)
        store = ProjectionStore(redis, "cost")
        await batch_cost(store, 500, 100, 1)  # warm: imports, connections, the function
        by_size = [
            await batch_cost(store, size, max(1, size // EVENTS_PER_JOB), repeats) for size in sizes
        ]
        # The same kind of event at every point (a job of one event cannot be a lifecycle):
        # only the number of jobs changes.
        by_jobs = [await batch_cost(store, 2000, jobs, repeats, "stage") for jobs in job_counts]
        return {"by_batch_size": by_size, "by_jobs_per_batch": by_jobs}
    finally:
        await redis.aclose()
        stack.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    found = await processes_scale(args.events, args.jobs, args.processes, workdir)
    one = next((row["events_per_s"] for row in found if row["processes"] == 1), None)
    for row in found:
        row["vs_1_process"] = row["events_per_s"] / one if one else None
    cost = await costs(args.batch_sizes, args.jobs_per_batch, args.repeats, workdir)
    return {
        "events": args.events,
        "jobs": args.jobs,
        "partitions": PARTITIONS,
        "processes": found,
        "cost": cost,
        "cost_method": "in process: projector.batch.prepare + ProjectionStore.merge_packed "
        "on a real redis-server, one after the other (the live process overlaps them)",
    }


# The sizes of `python -m bench.run_all` and of its `--quick` check.
FULL: list[str] = []
QUICK = [
    "--events",
    "20000",
    "--jobs",
    "2000",
    "--processes",
    "2",
    "--batch-sizes",
    "100",
    "2000",
    "--jobs-per-batch",
    "10",
    "2000",
    "--repeats",
    "1",
]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 500, 2000, 10000])
    parser.add_argument("--jobs-per-batch", type=int, nargs="+", default=[10, 100, 2000])
    parser.add_argument("--repeats", type=int, default=5, help="batches per point (median)")
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args))


def main() -> None:
    result = measure(parser().parse_args())
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('scale', result)}")


if __name__ == "__main__":
    main()
