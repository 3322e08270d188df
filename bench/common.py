"""Shared parts of the benchmarks: a stack, generated events, fast producing, reporting."""

from __future__ import annotations

import json
import platform
import random
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts.events import JobEvent
from projector.replay.topic import partition_for_key
from tests.integration.support import ulid

RESULTS = Path(__file__).parent / "results"


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


def lifecycle_records(jobs: int, per_job: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """`jobs` lifecycles of `per_job` events (created, queued, stages, succeeded), interleaved
    across jobs as live traffic is, each job's events in order."""
    rng = random.Random(seed)
    records: list[tuple[bytes, bytes]] = []
    lifecycles = []
    for n in range(jobs):
        job_id, tenant = ulid(), f"tenant-{n % 50}"
        kinds = ["created", "queued"] + ["stage"] * (per_job - 3) + ["succeeded"]
        lifecycles.append(
            [
                (
                    job_id.encode(),
                    event_bytes(tenant, job_id, seq, kind, ulid(), 2 if kind == "succeeded" else 0),
                )
                for seq, kind in enumerate(kinds, start=1)
            ]
        )
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


async def produce_fast(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> None:
    """Produce keyed records in big batches, partitioned as the default partitioner does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=1 << 20)
    await producer.start()
    try:
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
        for key, value in records:
            by_partition[partition_for_key(key, partitions)].append((key, value))
        futures = []
        for partition, items in by_partition.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        for future in futures:
            await future
    finally:
        await producer.stop()


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result | {"machine": machine()}, indent=2) + "\n")
    return path
