"""Soak: a million events at a steady pace and continuous reads for ten minutes.

`python -m bench.soak [--minutes 10 --events 1000000]` (also `make soak`; not part of CI).
Starts the local stack, one projector and one api, produces the events evenly over the run
and keeps `--readers` clients reading jobs whose first event was produced at least
`--settle` seconds earlier (so a 404 is an error: the job should be visible by then). Reports
errors (must be 0), read latency p50/p99, and the RSS of the projector and the api after the
first minute and at the end (must be flat).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.common import (
    lifecycle_records,
    percentile,
    produce_fast,
    rss_mib,
    write_result,
)
from devstack import create_topics, start_stack
from devstack.processes import free_port
from devstack.services import start_api, start_projector

SECRET = "soak-secret-0123456789abcdef0123456789"  # noqa: S105 - a local test key
PARTITIONS = 4
CHUNKS_PER_SECOND = 2


@dataclass
class Produced:
    """Jobs in the order their first event was produced, with when (monotonic seconds)."""

    jobs: list[tuple[str, str]] = field(default_factory=list)  # (tenant, job id)
    times: list[float] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, tenant: str, job: str, at: float) -> None:
        if job not in self.seen:
            self.seen.add(job)
            self.jobs.append((tenant, job))
            self.times.append(at)

    def older_than(self, seconds: float) -> int:
        return bisect.bisect_right(self.times, time.monotonic() - seconds)


@dataclass
class Reads:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _token(tenant: str) -> str:
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def _produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    seconds: float,
    produced: Produced,
) -> None:
    """Produce `records` evenly over `seconds`; note each job's first production time."""
    chunks = max(1, int(seconds * CHUNKS_PER_SECOND))
    size = -(-len(records) // chunks)
    started = time.monotonic()
    for n in range(chunks):
        chunk = records[n * size : (n + 1) * size]
        if not chunk:
            break
        await produce_fast(bootstrap, topic, chunk, PARTITIONS)
        now = time.monotonic()
        for key, value in chunk:
            if key.decode() not in produced.seen:
                produced.add(json.loads(value)["tenant_id"], key.decode(), now)
        await asyncio.sleep(max(0.0, started + (n + 1) / CHUNKS_PER_SECOND - time.monotonic()))


async def _read(port: int, produced: Produced, settle: float, until: float, reads: Reads) -> None:
    rng = random.Random()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while time.monotonic() < until:
            ready = produced.older_than(settle)
            if not ready:
                await asyncio.sleep(0.1)
                continue
            tenant, job = produced.jobs[rng.randrange(ready)]
            started = time.perf_counter()
            try:
                answer = await client.get(
                    f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {_token(tenant)}"}
                )
                reads.latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    reads.errors.append(f"{job}: {answer.status_code}")
            except httpx.HTTPError as error:
                reads.errors.append(f"{job}: {type(error).__name__}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    stack = start_stack(workdir)
    started: list[Any] = []
    try:
        topic = "soak.events"
        await create_topics(stack.kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
        env = stack.env() | {"KAFKA_TOPIC": topic, "JWT_SECRET": SECRET}
        projector = start_projector(env, workdir, "projector-soak")
        started.append(projector)
        port = free_port()
        api = start_api(env, workdir, port)
        started.append(api)
        records = lifecycle_records(args.events // 10, 10)
        seconds = args.minutes * 60
        produced = Produced()
        reads = Reads()
        until = time.monotonic() + seconds
        producing = asyncio.create_task(
            _produce(stack.kafka_bootstrap, topic, records, seconds - 30, produced)
        )
        readers = [
            asyncio.create_task(_read(port, produced, args.settle, until, reads))
            for _ in range(args.readers)
        ]
        await asyncio.sleep(60)
        memory_start = {
            "projector": rss_mib(projector.process.pid),
            "api": rss_mib(api.process.pid),
        }
        await asyncio.gather(producing, *readers)
        memory_end = {"projector": rss_mib(projector.process.pid), "api": rss_mib(api.process.pid)}
        return {
            "minutes": args.minutes,
            "events": len(records),
            "reads": len(reads.latencies),
            "errors": len(reads.errors),
            "error_examples": reads.errors[:5],
            "read_p50_ms": percentile(sorted(reads.latencies), 0.50) * 1000,
            "read_p99_ms": percentile(sorted(reads.latencies), 0.99) * 1000,
            "rss_mib_after_1_minute": memory_start,
            "rss_mib_at_end": memory_end,
            "processes_alive": all(p.process.poll() is None for p in started),
        }
    finally:
        for process in started:
            process.stop()
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before a job is read")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('soak', result)}")


if __name__ == "__main__":
    main()
