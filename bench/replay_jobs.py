"""`replay verify` and `replay drop` over 100,000 jobs, with this process's peak memory.

Two versions of the same jobs (a public `succeeded` event with 2 artifacts each) are written
straight through the store's merge, a chunk at a time so that writing holds little. Then
`verify` compares the two (equal) and `drop` deletes one. The RSS at each command's start and
its peak RSS while it ran (ru_maxrss, reset at its start; the two are read from different
kernel counters, so they agree within about a MiB) show whether it holds the jobs in memory:
one holding every key would grow by tens of MiB, every state by hundreds. `verify` is
compared with the plain way, in the same run: SCAN, HGETALL of both versions, compare.
`python -m bench.replay_jobs [--jobs N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import rss_mib, succeeded_job, write_result
from contracts.events import JobEvent
from contracts.job_state import JobState, job_key_pattern
from devstack import create_topics, start_stack
from devstack.data import BUCKETS
from projector.fold import JobRef, fold
from projector.replay import drop, verify, versions
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore

TOPIC = "bench.replay"
SOURCE, TARGET = "bench-a", "bench-b"
CHUNK = 5000


def peak_rss_mib() -> float:
    """The peak resident set since the start or the last `reset_peak_rss` (ru_maxrss, in KiB
    on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak_rss() -> None:
    """Start the peak afresh at the current RSS, so that a command's own peak shows even
    below what setting up took (Linux: `5` written to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def job_states(first: int, count: int) -> dict[JobRef, JobState]:
    states: dict[JobRef, JobState] = {}
    for n in range(first, first + count):
        events = [JobEvent.model_validate_json(value) for _, value in succeeded_job(n)]
        states[(events[0].tenant_id, events[0].job_id)] = fold(events)
    return states


async def write_jobs(redis: Redis, jobs: int) -> None:
    stores = [ProjectionStore(redis, version) for version in (SOURCE, TARGET)]
    for first in range(0, jobs, CHUNK):
        states = job_states(first, min(CHUNK, jobs - first))
        for store in stores:
            await store.merge(states)


@dataclass
class Measured:
    code: int
    seconds: float
    out: str
    rss_at_start: float
    peak_rss: float


async def measure_command(command: Callable[[], Awaitable[int]]) -> Measured:
    """One command's exit status, wall seconds, stdout (its progress goes to stderr), RSS at
    its start and peak RSS while it ran (MiB)."""
    out = io.StringIO()
    reset_peak_rss()
    rss_at_start = rss_mib()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = await command()
    seconds = time.perf_counter() - started
    print(out.getvalue(), end="", flush=True)
    return Measured(code, seconds, out.getvalue(), rss_at_start, peak_rss_mib())


async def naive_verify(redis: Redis) -> float:
    """Jobs/s of the plain way to compare two versions, the baseline of `verify`: SCAN the
    source's keys (as `verify` does, same batch size), fetch both versions of each job with
    pipelined HGETALLs, one round trip per batch, and compare the hashes in Python."""
    started, compared = time.perf_counter(), 0
    async for keys in versions.scan_keys(redis, job_key_pattern(SOURCE)):
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
            pipe.hgetall(key.replace(SOURCE.encode(), TARGET.encode(), 1))
        found = await pipe.execute()
        differing = sum(1 for a, b in zip(found[::2], found[1::2], strict=True) if a != b)
        assert differing == 0, "the two versions are equal"
        compared += len(keys)
    return compared / (time.perf_counter() - started)


def rate_in(out: str, unit: str) -> float:
    """The rate a command printed, e.g. `12,345 jobs/s`."""
    found = re.search(rf"([\d,]+) {unit}/s", out)
    if found is None:
        raise ValueError(f"no {unit}/s in {out!r}")
    return float(found.group(1).replace(",", ""))


async def run(jobs: int) -> dict[str, Any]:
    stack = start_stack(Path(tempfile.mkdtemp(prefix="bench-replay-")))
    redis = Redis.from_url(stack.redis_url)
    try:
        await create_topics(stack.kafka_bootstrap, {TOPIC: 4})
        started = time.perf_counter()
        await write_jobs(redis, jobs)
        print(f"wrote {jobs:,} jobs twice in {time.perf_counter() - started:.1f} s", flush=True)
        settings = ProjectorSettings(
            kafka_bootstrap_servers=stack.kafka_bootstrap,
            redis_url=stack.redis_url,
            kafka_topic=TOPIC,
            kafka_group_id="jobs-projector",
            artifact_buckets=",".join(BUCKETS),
        )
        peak_writing = peak_rss_mib()
        naive = await naive_verify(redis)
        print(f"naive verify (SCAN + HGETALL both): {naive:,.0f} jobs/s", flush=True)
        verify_args = argparse.Namespace(source=SOURCE, target=TARGET, tenant=None, sample=None)
        verified = await measure_command(lambda: verify.command(settings, verify_args))
        assert verified.code == 0, "the two versions are equal"
        dropped = await measure_command(
            lambda: drop.command(
                settings, argparse.Namespace(version=TARGET, force=False, yes=True)
            )
        )
        assert dropped.code == 0
        assert f"{jobs:,} keys removed" in dropped.out
        verify_rate = rate_in(verified.out, "jobs")
        return {
            "jobs": jobs,
            "verify_jobs_per_s": verify_rate,
            "naive_verify_jobs_per_s": naive,
            "verify_vs_naive": verify_rate / naive,
            "verify_seconds_with_startup": round(verified.seconds, 2),
            "drop_keys_per_s": rate_in(dropped.out, "keys"),
            "drop_seconds_with_startup": round(dropped.seconds, 2),
            "peak_rss_mib_writing_the_jobs": peak_writing,
            "rss_mib_at_verify_start": verified.rss_at_start,
            "peak_rss_mib_during_verify": verified.peak_rss,
            "rss_mib_at_drop_start": dropped.rss_at_start,
            "peak_rss_mib_during_drop": dropped.peak_rss,
        }
    finally:
        await redis.aclose()
        stack.stop()


# The sizes of `python -m bench.run_all` and of its `--quick` check.
FULL: list[str] = []
QUICK = ["--jobs", "5000"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args.jobs))


def main() -> None:
    result = measure(parser().parse_args())
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('replay_jobs', result)}")


if __name__ == "__main__":
    main()
