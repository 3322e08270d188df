"""`make run`: the local stack with the projector, the api and a few demo jobs.

Starts (or finds, from the environment) a Kafka-protocol broker, Redis and S3; creates the
topics and the bucket; starts the projector and the api; publishes demo jobs through the
contracts publisher; prints a ready `curl` line. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from contracts.events import JobEvent
from contracts.publisher import JobEventPublisher
from devstack import Stack, create_bucket, create_topics, s3_client, start_stack
from devstack.processes import LocalProcess, free_port
from devstack.services import start_api, start_projector

TOPIC = "jobs.events"
BUCKET = "renders"
KEY_PREFIX = "tenants/{tenant_id}/"  # what the README recommends
TENANT = "demo"
DEV_SECRET = "local-dev-secret-not-for-production"  # noqa: S105 - the local stack's own


def demo_events() -> list[JobEvent]:
    """Three jobs: one succeeded with two renders, one running, one failed."""
    created = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    jobs = [
        ("01JDQ8Z3M4W8K2V7T6R5N4P3Q2", ["created", "queued", "stage", "succeeded"]),
        ("01JDQ8Z3M4W8K2V7T6R5N4P3R3", ["created", "queued", "stage"]),
        ("01JDQ8Z3M4W8K2V7T6R5N4P3S4", ["created", "queued", "failed"]),
    ]
    events = []
    for n, (job_id, kinds) in enumerate(jobs):
        for seq, kind in enumerate(kinds, start=1):
            artifacts = []
            if kind == "succeeded":
                artifacts = [
                    {
                        "bucket": BUCKET,
                        "key": f"tenants/{TENANT}/{job_id}/look {i}.png",
                        "kind": "on_model_render",
                        "role": "final",
                        "metadata": {"width": 2048, "height": 3072},
                    }
                    for i in (1, 2)
                ]
            raw = {
                "schema_version": 1,
                "event_id": f"01JDQ9{n}{seq}" + "0" * 18,
                "tenant_id": TENANT,
                "job_id": job_id,
                "job_type": "ON_MODEL_RENDER",
                "job_created_at": created.isoformat(),
                "seq": seq,
                "kind": kind,
                "visibility": "public",
                "message": f"{kind} ({seq})",
                "artifacts": artifacts,
                "payload": {"cost": {"credits": 3}} if kind == "succeeded" else {},
                "occurred_at": (created + timedelta(seconds=seq)).isoformat(),
            }
            events.append(JobEvent.model_validate(raw, strict=False))
    return events


def dev_token() -> str:
    exp = int(time.time()) + 24 * 3600
    return jwt.encode({"tenant_id": TENANT, "exp": exp, "sub": "dev"}, DEV_SECRET, "HS256")


async def prepare(stack: Stack) -> None:
    await create_topics(stack.kafka_bootstrap, {TOPIC: 4, f"{TOPIC}.dlq": 1})
    create_bucket(stack, BUCKET)
    s3 = s3_client(stack)
    for event in demo_events():
        for artifact in event.artifacts:
            s3.put_object(Bucket=artifact.bucket, Key=artifact.key, Body=b"\x89PNG demo")


async def publish_demo(stack: Stack) -> None:
    async with JobEventPublisher(stack.kafka_bootstrap, TOPIC, idempotent=False) as publisher:
        await publisher.publish_many(demo_events())


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="jobs-stack-"))
    ours: list[LocalProcess] = []
    stack = start_stack(workdir)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # A terminal's Ctrl-C can arrive twice (from the terminal and forwarded by `uv run`):
        # finish stopping regardless.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping ...", flush=True)
        for process in reversed(ours):
            process.stop()
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped.", flush=True)

    # Ctrl-C and SIGTERM both end the loop below and run `stop()`; SIGINT is set explicitly
    # because a shell without job control starts background commands with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(prepare(stack))
        env = stack.env() | {
            "KAFKA_TOPIC": TOPIC,
            "JWT_SECRET": DEV_SECRET,
            "ARTIFACT_BUCKETS": BUCKET,
            "ARTIFACT_KEY_PREFIX": KEY_PREFIX,
        }
        projector_port = 8001 if _port_free(8001) else free_port()
        ours.append(start_projector(env | {"PROJECTOR_HTTP_PORT": str(projector_port)}, workdir))
        port = 8000 if _port_free(8000) else free_port()
        ours.append(start_api(env, workdir, port))
        asyncio.run(publish_demo(stack))
        print(
            f"\nlocal stack up (logs in {workdir}):\n"
            f"  kafka {stack.kafka_bootstrap}   redis {stack.redis_url}\n"
            f"  s3    {stack.s3_endpoint_url}\n"
            f"  api   http://127.0.0.1:{port}   (/healthz /readyz /metrics)\n"
            f"  projector http://127.0.0.1:{projector_port}   (/healthz /readyz /metrics)\n\n"
            f"curl -s -H 'Authorization: Bearer {dev_token()}' "
            f"http://127.0.0.1:{port}/v1/jobs/01JDQ8Z3M4W8K2V7T6R5N4P3Q2\n\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while all(p.process.poll() is None for p in ours):
            time.sleep(0.5)
        print("a process exited; see its log:", flush=True)
        for p in ours:
            if p.process.poll() is not None:
                print(p.log_tail(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def _port_free(port: int) -> bool:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    main()
