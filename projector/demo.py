"""`python -m projector.demo`: steady demo traffic, so that the dashboard has something to show.

Publishes job lifecycles (created, queued, three stages, then succeeded with two renders or,
one time in ten, failed) through the contracts publisher at `--rate` events per second, over
`--jobs` jobs in flight at once, with `occurred_at` set to the moment of sending (so the
event-to-visible latency is real). A small share of events is sent twice, as an at-least-once
producer does, and shows up as the projector's `duplicate` outcome.

Before publishing a `succeeded` event it uploads the renders the event names (a 1x1 PNG each)
to `ARTIFACT_BUCKET` (default renders), so that the api's presigned URLs fetch an object: when
`S3_ENDPOINT_URL` is set or boto3 finds AWS credentials; otherwise it logs once that it does not.

`--print-token` prints a bearer token for `--tenant` signed with `JWT_SECRET` and exits: run
it in the api's container to get a token that the api accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from pydantic import Field
from ulid import ULID

from contracts.events import JobEvent
from contracts.publisher import JobEventPublisher
from contracts.settings import KafkaSettings, load_or_exit

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

STEPS = ("created", "queued", "stage", "stage", "stage")
TICK_SECONDS = 0.1
BUCKET = "renders"
UPLOADS_AT_ONCE = 8

log = logging.getLogger("projector.demo")


def new_ulid() -> str:
    return str(ULID())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def tiny_png() -> bytes:
    """A valid 1x1 PNG (8-bit RGB, one blue pixel): what every demo render holds."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, depth, RGB, ...
    pixels = zlib.compress(b"\x00" + bytes((0x2B, 0x6C, 0xB0)))  # filter byte, then R G B
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


PNG = tiny_png()


@dataclass
class DemoJob:
    tenant: str
    bucket: str = BUCKET
    job_id: str = field(default_factory=new_ulid)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    kinds: tuple[str, ...] = field(
        default_factory=lambda: (*STEPS, "failed" if random.random() < 0.1 else "succeeded")
    )
    sent: list[JobEvent] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.sent) == len(self.kinds)

    def next_event(self) -> JobEvent:
        seq = len(self.sent) + 1
        kind = self.kinds[seq - 1]
        raw: dict[str, Any] = {
            "schema_version": 1,
            "event_id": new_ulid(),
            "tenant_id": self.tenant,
            "job_id": self.job_id,
            "job_type": "ON_MODEL_RENDER",
            "job_created_at": self.created_at,
            "seq": seq,
            "kind": kind,
            "visibility": "public",
            "message": f"{kind} ({seq})",
            "artifacts": [
                {
                    "bucket": self.bucket,
                    "key": f"tenants/{self.tenant}/{self.job_id}/look-{i}.png",
                    "kind": "on_model_render",
                    "role": "final",
                    "metadata": {"width": 2048, "height": 3072},
                }
                for i in (1, 2)
            ]
            if kind == "succeeded"
            else [],
            "payload": {"progress": seq * 20} if kind == "stage" else {},
            "occurred_at": datetime.now(UTC),
        }
        event = JobEvent.model_validate(raw, strict=False)
        self.sent.append(event)
        return event


class Traffic:
    """The events of one tick: a random job in flight moves one step (or repeats its last)."""

    def __init__(
        self, tenant: str, jobs: int, duplicate_ratio: float, bucket: str = BUCKET
    ) -> None:
        self.tenant = tenant
        self.bucket = bucket
        self.jobs = [DemoJob(tenant, bucket) for _ in range(jobs)]
        self.duplicate_ratio = duplicate_ratio
        self.first_finished: str | None = None

    def take(self, count: int) -> list[JobEvent]:
        events = []
        for _ in range(count):
            i = random.randrange(len(self.jobs))
            job = self.jobs[i]
            if job.sent and random.random() < self.duplicate_ratio:
                events.append(job.sent[-1])
                continue
            events.append(job.next_event())
            if job.done:
                self.first_finished = self.first_finished or job.job_id
                self.jobs[i] = DemoJob(self.tenant, self.bucket)
        return events


class DemoSettings(KafkaSettings):
    kafka_topic: str = "jobs.events"
    kafka_idempotent_producer: bool = False
    # Where the renders of `succeeded` events are uploaded (one of the api's ARTIFACT_BUCKETS).
    artifact_bucket: str = Field(default=BUCKET, min_length=1)
    s3_endpoint_url: str | None = None
    aws_region: str | None = None


class ArtifactUploader:
    """Puts the objects that `succeeded` events name, before the events are published."""

    def __init__(self, client: S3Client | None) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(UPLOADS_AT_ONCE)

    @classmethod
    def from_settings(cls, settings: DemoSettings) -> ArtifactUploader:
        session = boto3.session.Session()
        if settings.s3_endpoint_url is None and session.get_credentials() is None:
            log.info(
                "no S3_ENDPOINT_URL and no AWS credentials: the renders that succeeded events "
                "name are not uploaded (their presigned URLs will find no object)"
            )
            return cls(None)
        client = session.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region or session.region_name or "us-east-1",
            # Path style: MinIO and other S3-compatible endpoints serve it without DNS names.
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=UPLOADS_AT_ONCE),
        )
        log.info(
            "uploading the renders of succeeded events to %s",
            settings.s3_endpoint_url or "AWS S3",
        )
        return cls(client)

    async def upload(self, events: Iterable[JobEvent]) -> None:
        """Uploads every artifact the `succeeded` events among `events` name."""
        if self._client is None:
            return
        objects = {
            (artifact.bucket, artifact.key)
            for event in events
            if event.kind == "succeeded"
            for artifact in event.artifacts
        }
        await asyncio.gather(*(self._put(bucket, key) for bucket, key in objects))

    async def _put(self, bucket: str, key: str) -> None:
        assert self._client is not None
        async with self._slots:  # boto3 blocks: in threads, as many as the connection pool
            await asyncio.to_thread(
                self._client.put_object, Bucket=bucket, Key=key, Body=PNG, ContentType="image/png"
            )


def bearer_token(tenant: str, secret: str, hours: int = 24) -> str:
    import jwt

    claims = {"tenant_id": tenant, "sub": "demo", "exp": int(time.time()) + hours * 3600}
    return jwt.encode(claims, secret, "HS256")


async def produce(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # PID 1 in a container ignores SIGTERM else
        loop.add_signal_handler(signum, stop.set)
    settings = load_or_exit(DemoSettings)
    traffic = Traffic(args.tenant, args.jobs, args.duplicate_ratio, settings.artifact_bucket)
    uploader = ArtifactUploader.from_settings(settings)
    kafka, topic = settings.kafka, settings.kafka_topic
    sent, owed, announced = 0, 0.0, False
    started = next_report = loop.time()
    async with JobEventPublisher(
        kafka.bootstrap_servers,
        topic,
        idempotent=settings.kafka_idempotent_producer,
        security=kafka.security,
    ) as publisher:
        log.info("publishing %s events/s to %s on %s", args.rate, topic, kafka.bootstrap_servers)
        while not stop.is_set() and (args.seconds == 0 or loop.time() - started < args.seconds):
            tick = loop.time()
            owed += args.rate * TICK_SECONDS
            batch = traffic.take(int(owed))
            owed -= len(batch)
            await uploader.upload(batch)  # the objects first: a finished job's URLs work at once
            await publisher.publish_many(batch)
            sent += len(batch)
            if not announced and traffic.first_finished and os.environ.get("JWT_SECRET"):
                announced = True
                token = bearer_token(args.tenant, os.environ["JWT_SECRET"])
                log.info(
                    "a finished job: curl -s -H 'Authorization: Bearer %s' "
                    "http://localhost:8000/v1/jobs/%s",
                    token,
                    traffic.first_finished,
                )
            if tick >= next_report:
                log.info("%d events published", sent)
                next_report = tick + 10
            # A slow tick is not made up for with a burst: the rate stays steady.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, tick + TICK_SECONDS - loop.time()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m projector.demo", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in flight at once")
    parser.add_argument("--duplicate-ratio", type=float, default=0.02)
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--seconds", type=float, default=0, help="stop after; 0: never")
    parser.add_argument("--print-token", action="store_true", help="print a token and exit")
    args = parser.parse_args(argv)
    if args.print_token:
        secret = os.environ.get("JWT_SECRET")
        if not secret:
            parser.exit(2, "JWT_SECRET is not set\n")
        print(bearer_token(args.tenant, secret))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(produce(args))


if __name__ == "__main__":
    main()
