"""Shared parts of the benchmarks: a stack, generated events, fast producing, reporting."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts.events import JobEvent
from devstack.data import ulid
from projector.replay.topic import partition_for_key

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def event_bytes(
    tenant: str, job_id: str, seq: int, kind: str, event_id: str, artifacts: int = 0
) -> bytes:
    arts = [
        {
            "bucket": "renders",
            "key": f"{tenant}/{job_id}/look-{i}.png",
            "kind": "on_model_render",
            "role": "final",
            "metadata": {"width": 2048, "height": 3072},
        }
        for i in range(artifacts)
    ]
    body = {
        "schema_version": 1,
        "event_id": event_id,
        "tenant_id": tenant,
        "job_id": job_id,
        "job_type": "ON_MODEL_RENDER",
        "job_created_at": "2026-11-29T12:00:00Z",
        "seq": seq,
        "kind": kind,
        "visibility": "public",
        "message": f"{kind} step {seq}",
        "artifacts": arts,
        "payload": {"progress": seq * 10} if kind == "stage" else {},
        "occurred_at": f"2026-11-29T12:{seq // 60:02d}:{seq % 60:02d}Z",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def lifecycle_kinds(events: int) -> list[str]:
    """A job's kinds, seq 1 first: created, queued, stages, succeeded; a shorter life keeps
    its end (a job of one event is its `succeeded`, the event that writes every group)."""
    if events >= 3:
        return ["created", "queued"] + ["stage"] * (events - 3) + ["succeeded"]
    return ["created", "succeeded"][-events:]


def job_events(
    tenant: str, job_id: str, events: int, kinds: list[str] | None = None
) -> list[tuple[bytes, bytes]]:
    """One job's `events` as keyed records, in seq order: its lifecycle, or the `kinds`
    given; `succeeded` carries 2 artifacts."""
    return [
        (
            job_id.encode(),
            event_bytes(tenant, job_id, seq, kind, ulid(), 2 if kind == "succeeded" else 0),
        )
        for seq, kind in enumerate(kinds or lifecycle_kinds(events), start=1)
    ]


def succeeded_job(n: int) -> list[tuple[bytes, bytes]]:
    """Job number `n` (ids fixed by `n`): `created`, then a public `succeeded` with 2
    artifacts - a finished job as it is stored for good."""
    tenant, job_id = f"tenant-{n % 50}", ulid(n + 1)
    return [
        (
            job_id.encode(),
            event_bytes(tenant, job_id, seq, kind, ulid(10**9 + 2 * n + seq), artifacts),
        )
        for seq, kind, artifacts in ((1, "created", 0), (2, "succeeded", 2))
    ]


def lifecycle_records(jobs: int, per_job: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """`jobs` lifecycles of `per_job` events (created, queued, stages, succeeded), interleaved
    across jobs as live traffic is, each job's events in order."""
    rng = random.Random(seed)
    records: list[tuple[bytes, bytes]] = []
    lifecycles = [job_events(f"tenant-{n % 50}", ulid(), per_job) for n in range(jobs)]
    cursors = [0] * jobs
    live = list(range(jobs))
    while live:
        i = rng.randrange(len(live))
        job = live[i]
        records.append(lifecycles[job][cursors[job]])
        cursors[job] += 1
        if cursors[job] == per_job:
            live[i] = live[-1]
            live.pop()
    for _, value in records[:: max(1, len(records) // 200)]:
        JobEvent.model_validate_json(value)  # the generated traffic is valid
    return records


async def send_partitioned(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]], partitions: int
) -> list[asyncio.Future[Any]]:
    """Send keyed records as whole batches, partitioned as the default partitioner does;
    returns the futures of the broker's acknowledgements."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        by_partition.setdefault(partition_for_key(key, partitions), []).append((key, value))
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def fast_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1 << 20)


async def produce_fast(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> None:
    """Produce keyed records in big batches, partitioned as the default partitioner does."""
    producer = fast_producer(bootstrap)
    await producer.start()
    try:
        for future in await send_partitioned(producer, topic, records, partitions):
            await future
    finally:
        await producer.stop()


def rss_mib(pid: int | None = None) -> float:
    """Resident set of a process (this one by default), in MiB."""
    with open(f"/proc/{pid or 'self'}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise LookupError("VmRSS")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time a process (this one by default) has used so far."""
    with open(f"/proc/{pid or 'self'}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of values sorted ascending, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    return int(head[9:12]), await reader.readexactly(length)


def get_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def git_commit() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result | {"machine": machine()}, indent=2) + "\n")
    return path
