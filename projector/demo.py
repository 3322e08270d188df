"""`python -m projector.demo`: steady demo traffic, so that the dashboard has something to show.

Publishes job lifecycles (created, queued, three stages, then succeeded with two renders or,
one time in ten, failed) through the contracts publisher at `--rate` events per second, over
`--jobs` jobs in flight at once, with `occurred_at` set to the moment of sending (so the
event-to-visible latency is real). A small share of events is sent twice, as an at-least-once
producer does, and shows up as the projector's `duplicate` outcome.

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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

from contracts.events import JobEvent
from contracts.publisher import JobEventPublisher
from contracts.settings import KafkaSettings, load_or_exit

STEPS = ("created", "queued", "stage", "stage", "stage")
TICK_SECONDS = 0.1
BUCKET = "renders"

log = logging.getLogger("projector.demo")


def new_ulid() -> str:
    return str(ULID())


@dataclass
class DemoJob:
    tenant: str
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
                    "bucket": BUCKET,
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

    def __init__(self, tenant: str, jobs: int, duplicate_ratio: float) -> None:
        self.tenant = tenant
        self.jobs = [DemoJob(tenant) for _ in range(jobs)]
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
                self.jobs[i] = DemoJob(self.tenant)
        return events


class DemoSettings(KafkaSettings):
    kafka_topic: str = "jobs.events"
    kafka_idempotent_producer: bool = False


def bearer_token(tenant: str, secret: str, hours: int = 24) -> str:
    import jwt

    claims = {"tenant_id": tenant, "sub": "demo", "exp": int(time.time()) + hours * 3600}
    return jwt.encode(claims, secret, "HS256")


async def produce(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # PID 1 in a container ignores SIGTERM else
        loop.add_signal_handler(signum, stop.set)
    traffic = Traffic(args.tenant, args.jobs, args.duplicate_ratio)
    settings = load_or_exit(DemoSettings)
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
