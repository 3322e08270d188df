"""Projector throughput against its ceiling and its baseline, on one broker, in one run.

- raw: aiokafka `getmany` over the topic, no processing (the ceiling);
- naive: a per-message FastStream handler validating each event and writing it to Redis
  with one command (what a careful team writes first);
- ours: `python -m projector run`, measured by its committed offsets. The topic is projected
  `--passes` times, each into a projection version of its own (a fresh keyspace and consumer
  group, the same work): 200,000 events take the projector about three seconds here, and the
  steady windows of the passes add up to several;
- rebuild: `python -m projector replay build` of the same topic into another version, as the
  command reports it (from its first fetch to its last commit), as many times as the
  projector's passes.

The machine's speed drifts by tens of percent within a minute here, so the raw figure is not
taken once and compared with a projector measured a minute later: raw windows alternate with
the projector's passes (raw, pass, build, raw, pass, build, ..., raw), `--raw-window` seconds
in all, and each figure is the sum of its events over the sum of its windows. Each pass is
also compared with the raw windows on either side of it (`projector_vs_raw_per_pass`).

Each is timed over its steady window: from its first event, excluding start-up and the
group join. `python -m bench.projector [--events N --jobs J]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis

from bench.common import (
    lifecycle_records,
    produce_fast,
    rss_mib,
    write_result,
)
from contracts.events import JobEvent
from devstack import create_topics, start_stack
from devstack.services import start_projector

PARTITIONS = 4


@dataclass(frozen=True)
class Window:
    """Events handled over a steady window of seconds."""

    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def rate(windows: Sequence[Window]) -> float:
    """All the events over all the time."""
    return sum(w.events for w in windows) / sum(w.seconds for w in windows)


async def measure_raw(bootstrap: str, topic: str, total: int, window: float = 5.0) -> Window:
    """A bare `getmany` loop over at least `window` seconds: the topic is read again from the
    beginning until then (200,000 events take under a second)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, in_window, first = 0, 0, 0.0
        while not first or time.perf_counter() - first < window:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            count = sum(len(records) for records in batch.values())
            seen += count
            if count and not first:
                first = time.perf_counter()  # the window starts after the first fetch
            elif first:
                in_window += count
            if seen >= total:  # read it all: once more from the beginning
                seen = 0
                await consumer.seek_to_beginning(*partitions)
        return Window(in_window, time.perf_counter() - first)
    finally:
        await consumer.stop()


async def measure_naive(bootstrap: str, topic: str, redis_url: str, window: float) -> float:
    """A per-message handler: validate, then one HSET per event. Timed over `window` s."""
    redis = Redis.from_url(redis_url)
    # No per-message log lines (FastStream's default logs two per message): the baseline is
    # measured at its best.
    broker = KafkaBroker(bootstrap, logger=None)
    stamps: list[float] = []

    @broker.subscriber(topic, group_id=f"naive-{time.time_ns()}", auto_offset_reset="earliest")
    async def handle(event: JobEvent) -> None:
        await redis.hset(
            f"naive:{{{event.tenant_id}:{event.job_id}}}",
            mapping={"status": event.kind, "seq": event.seq, "last": event.model_dump_json()},
        )
        stamps.append(time.perf_counter())

    await broker.start()
    try:
        while not stamps:
            await asyncio.sleep(0.1)
        await asyncio.sleep(window)
        start, end = stamps[0], stamps[-1]
        return (len(stamps) - 1) / (end - start)
    finally:
        await broker.stop()
        await redis.aclose()


@dataclass(frozen=True)
class Drained(Window):
    """One projector's run through the topic: events committed over its steady window, and
    its RSS at 10 %, 50 %, 100 % of the topic."""

    rss_mib: list[float]


class CommitWatch:
    """A group's committed offsets, read by one consumer that does not join the group (Tansu's
    admin API cannot), kept open: a poll costs a few milliseconds, not a connection."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    async def __aenter__(self) -> CommitWatch:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def committed(self) -> int:
        offsets = await asyncio.gather(*map(self._consumer.committed, self._partitions))
        return sum(offset or 0 for offset in offsets)


# How often the projector's progress is read: its window ends at most this late.
POLL_SECONDS = 0.02


async def measure_ours(
    env: dict[str, str], workdir: Path, bootstrap: str, topic: str, total: int, group: str
) -> Drained:
    """Events committed over the steady window (from the first commit seen to the last), and
    the projector's RSS at 10 %, 50 % and 100 % of the topic."""
    projector = start_projector(env, workdir, "projector-bench")
    try:
        async with CommitWatch(bootstrap, topic, group) as watch:
            progress: list[tuple[float, int]] = []
            rss: list[float] = []
            while True:
                done = await watch.committed()
                progress.append((time.perf_counter(), done))
                while len(rss) < 3 and done >= (0.1, 0.5, 1.0)[len(rss)] * total:
                    rss.append(rss_mib(projector.process.pid))
                if done >= total:
                    break
                if projector.process.poll() is not None:
                    raise RuntimeError(projector.log_tail())
                await asyncio.sleep(POLL_SECONDS)
        started = next(i for i, (_, n) in enumerate(progress) if n > 0)
        (t0, n0), (t1, n1) = progress[started], progress[-1]
        return Drained(n1 - n0, t1 - t0, rss)
    finally:
        projector.stop()


def measure_build(env: dict[str, str], version: str = "bench-build") -> float:
    """Events/s of `replay build --from-beginning`, from its own report."""
    command = ["replay", "build", "--version", version, "--from-beginning"]
    done = subprocess.run(
        [sys.executable, "-m", "projector", *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"([\d,]+) events/s", done.stdout)
    if found is None:
        raise RuntimeError(f"no rate in the build's report:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1).replace(",", ""))


async def run(
    events: int,
    jobs: int,
    naive_window: float,
    raw_window: float = 8.0,
    baselines: bool = True,
    passes: int = 1,
) -> dict[str, Any]:
    """All four in one run; without `baselines`, the projector alone (for its memory)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-projector-"))
    stack = start_stack(workdir)
    try:
        topic = "bench.events"
        bootstrap = stack.kafka_bootstrap
        await create_topics(bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
        records = lifecycle_records(jobs, events // jobs)
        started = time.perf_counter()
        await produce_fast(bootstrap, topic, records, PARTITIONS)
        print(
            f"produced {len(records)} events over {jobs} jobs in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        result: dict[str, Any] = {"events": len(records), "jobs": jobs}
        env = stack.env() | {"KAFKA_TOPIC": topic}
        raw_slice = raw_window / (passes + 1)
        raws: list[Window] = []
        drained: list[Drained] = []
        builds: list[float] = []

        async def raw_window_once() -> None:
            raws.append(await measure_raw(bootstrap, topic, len(records), raw_slice))
            print(f"raw aiokafka: {raws[-1].events_per_s:,.0f} events/s", flush=True)

        if baselines:
            naive = await measure_naive(bootstrap, topic, stack.redis_url, naive_window)
            print(f"naive per-message FastStream: {naive:,.0f} events/s", flush=True)
            await raw_window_once()
        for n in range(1, passes + 1):
            version = "bench" if n == 1 else f"bench-{n}"
            group = f"jobs-projector.{version}"
            pass_env = env | {"PROJECTION_VERSION": version}
            drained.append(
                await measure_ours(pass_env, workdir, bootstrap, topic, len(records), group)
            )
            print(f"projector: {drained[-1].events_per_s:,.0f} events/s", flush=True)
            if baselines:
                # Each build into a version of its own: the same work as a projector pass.
                builds.append(measure_build(env, f"bench-build-{n}"))
                print(f"replay build: {builds[-1]:,.0f} events/s", flush=True)
                await raw_window_once()
        ours, window = rate(drained), sum(d.seconds for d in drained)
        rss = drained[0].rss_mib
        print(
            f"projector: {ours:,.0f} events/s over {window:.1f} s; RSS at 10/50/100 %: {rss} MiB",
            flush=True,
        )
        result |= {
            "projector_events_per_s": ours,
            "projector_window_seconds": window,
            "projector_events_per_s_per_pass": [d.events_per_s for d in drained],
            "projector_rss_mib_at_10_50_100_percent": rss,
        }
        if baselines:
            raw = rate(raws)
            # The same events each time: all the events over all the time is the harmonic
            # mean of the builds' rates.
            build = len(builds) / sum(1 / each for each in builds)
            print(f"raw aiokafka: {raw:,.0f} events/s over {sum(w.seconds for w in raws):.1f} s")
            print(f"replay build: {build:,.0f} events/s = {build / ours:.0%} of the projector")
            result |= {
                "raw_events_per_s": raw,
                "raw_window_seconds": sum(w.seconds for w in raws),
                "raw_events_per_s_per_window": [w.events_per_s for w in raws],
                "naive_events_per_s": naive,
                "projector_vs_raw": ours / raw,
                # Each pass against the mean of the raw windows just before and after it.
                "projector_vs_raw_per_pass": [
                    d.events_per_s / ((before.events_per_s + after.events_per_s) / 2)
                    for d, before, after in zip(drained, raws[:-1], raws[1:], strict=True)
                ],
                "projector_vs_naive": ours / naive,
                "replay_build_events_per_s": build,
                "replay_build_events_per_s_per_pass": builds,
                "replay_build_vs_projector": build / ours,
            }
        redis = Redis.from_url(stack.redis_url)
        stored = sum([1 async for _ in redis.scan_iter(match="job:bench:*", count=5000)])
        await redis.aclose()
        assert stored == jobs, f"the projector stored {stored} jobs, expected {jobs}"
        return result
    finally:
        stack.stop()


# The sizes of `python -m bench.run_all` (README "Performance") and of its `--quick` check.
FULL: list[str] = []
QUICK = ["--events", "20000", "--jobs", "2000", "--naive-window", "1", "--raw-window", "1"]
QUICK += ["--passes", "2"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="e.g. 1000000 for memory")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--naive-window", type=float, default=10.0)
    parser.add_argument(
        "--raw-window", type=float, default=8.0, help="seconds of raw reading, in all"
    )
    parser.add_argument("--passes", type=int, default=3, help="projector runs over the topic")
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(
        run(args.events, args.jobs, args.naive_window, args.raw_window, passes=args.passes)
    )


def main() -> None:
    result = measure(parser().parse_args())
    print(json.dumps(result, indent=2))
    per_pass = ", ".join(f"{ratio:.3f}" for ratio in result["projector_vs_raw_per_pass"])
    print(
        f"projector = {result['projector_vs_raw']:.3f} of raw (per pass, against the raw "
        f"windows around it: {per_pass}), {result['projector_vs_naive']:.1f}x naive"
    )
    print(f"wrote {write_result('projector', result)}")


if __name__ == "__main__":
    main()
