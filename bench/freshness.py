"""Freshness: the time from producing an event to seeing it over HTTP, at a steady rate.

A paced producer writes the lifecycles of many jobs into the topic at `--rate` events/s
(`--in-flight` jobs at a time, each receiving `--events-per-job` events: created, queued,
stages, succeeded), projected by a real `python -m projector run` and read through a real
`python -m api`. Like a Kafka producer with `linger.ms`, it sends what came due every
`--linger-ms` (one record batch per partition), and an event's time counts from the moment it
came due, so the wait in the producer is part of the figure. Every `--watch-every`-th job is
followed by a client long-polling `GET /v1/jobs/{id}?wait=…&after_seq=<the last seq it saw>`
(CONTRACT §3): the answer comes as soon as `latest_event.seq` passes `after_seq`, and an
answer showing seq s makes every event of the job up to s visible at the moment it arrived.
An event's freshness is that moment minus the moment it came due, both read from this
process's clock.
The job's `created` event (seq 1) never shows as `latest_event`, so seqs 2 and up are timed.

Baseline, in the same run and on the same broker: the same schedule is first produced into a
topic of its own, read by a bare aiokafka consumer assigned every partition, with the
projector's fetch settings (`KAFKA_FETCH_MAX_WAIT_MS`), which notes when each timed event
reaches it: what the broker alone costs a consumer like the projector's. It runs before the
projector's phase, not beside it, because a second consumer on the topic doubles the broker's
fetch work (Tansu's in-memory fetch costs grow with the partition's log: measured, one
consumer of a 5,000 events/s topic took Tansu from 0.16 to 0.97 of a core over 40 s), and
the figure it is compared with would pay for the comparison. The same growth is why the
producer's batching matters here: Tansu's fetch work grows with the number of record batches
in the log, so the broker-only phase is also run with the producer sending every
`--compare-linger-ms`, to show what the broker alone costs then. A subscriber to the merge's
change announcements in Redis splits ours in two: produced -> merged in Redis, and merged ->
visible over HTTP (the api's share).
Target: p99 at most 100 ms. `python -m bench.freshness [--rate 5000 --seconds 30]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench.common import (
    cpu_seconds,
    fast_producer,
    get_request,
    job_events,
    percentile,
    read_response,
    send_partitioned,
    write_result,
)
from contracts.job_state import DEFAULT_VERSION, change_channel
from devstack import create_topics, start_stack
from devstack.data import ulid
from devstack.services import start_api, start_projector
from projector.settings import ProjectorSettings

FETCH_MAX_WAIT_MS = ProjectorSettings.model_fields["kafka_fetch_max_wait_ms"].default

SECRET = "bench-freshness-secret-0123456789abcdef"  # noqa: S105 - a bench key
PARTITIONS = 4
TOPIC = "bench.freshness"
BASELINE_TOPIC = "bench.freshness.broker"  # the broker-only phases' (a suffix each)
TARGET_P99_MS = 100.0
WAIT_SECONDS = 10  # a long poll's hold; an event not visible by then is an error
TENANTS = 50
clock = time.perf_counter


@dataclass(frozen=True)
class Job:
    index: int
    tenant: str
    job_id: str


@dataclass
class Run:
    """What the producer, the followers and the bare consumer share."""

    jobs: list[Job]
    followed: set[int]  # job indexes
    # (job, seq) -> this process's clock: handed to the producer, fetched by the bare
    # consumer, announced by the merge in Redis, seen over HTTP.
    sent_at: dict[tuple[int, int], float] = field(default_factory=dict)
    delivered_at: dict[tuple[int, int], float] = field(default_factory=dict)
    stored_at: dict[tuple[int, int], float] = field(default_factory=dict)
    visible_at: dict[tuple[int, int], float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def latencies(self, stage: dict[tuple[int, int], float]) -> list[float]:
        return [at - self.sent_at[event] for event, at in stage.items()]


# (seconds from the start, job index, seq, key, value)
Scheduled = tuple[float, int, int, bytes, bytes]


def schedule(
    rate: float, seconds: float, in_flight: int, per_job: int
) -> tuple[list[Job], list[Scheduled]]:
    """A job starts every `per_job / rate` s and gets an event every `in_flight / rate` s:
    `rate` events/s overall, `in_flight` jobs receiving events at any time."""
    gap, start_every = in_flight / rate, per_job / rate
    jobs, events = [], []
    for index in range(max(1, round(rate * seconds / per_job))):
        job = Job(index, f"tenant-{index % TENANTS}", ulid())
        jobs.append(job)
        for seq, (key, value) in enumerate(job_events(job.tenant, job.job_id, per_job), 1):
            events.append((index * start_every + (seq - 1) * gap, index, seq, key, value))
    events.sort(key=lambda event: event[0])
    return jobs, events


def token(tenant: str) -> str:
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def follow(port: int, job: Job, per_job: int, run: Run, tokens: dict[str, str]) -> None:
    """Long-poll one job until its last event is visible, timing each event it sees."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {tokens[job.tenant]}"}
    after = 1
    try:
        while after < per_job:
            path = f"/v1/jobs/{job.job_id}?wait={WAIT_SECONDS}&after_seq={after}"
            writer.write(get_request(path, headers))
            status, body = await read_response(reader)
            now = clock()
            seq = json.loads(body)["latest_event"]["seq"] if status == 200 else 0
            if seq <= after:
                run.errors.append(f"{job.job_id}: {status}, seq {after + 1} not visible")
                return
            for visible in range(after + 1, seq + 1):
                run.visible_at[(job.index, visible)] = now
            after = seq
    finally:
        writer.close()
        await writer.wait_closed()


async def produce_paced(
    bootstrap: str,
    topic: str,
    events: list[Scheduled],
    run: Run,
    on_first_event: Any,
    linger: float,
) -> list[tuple[float, int]]:
    """Send what came due every `linger` s, timing each event from the moment it came due,
    and wait for every acknowledgement; returns (seconds from the start, events sent) of
    every send."""
    producer = fast_producer(bootstrap)
    await producer.start()
    acks: list[asyncio.Future[Any]] = []
    sends: list[tuple[float, int]] = []
    try:
        started = clock()
        sent = 0
        while sent < len(events):
            now = clock() - started
            due = sent
            while due < len(events) and events[due][0] <= now:
                due += 1
            if due > sent:
                stamp = clock()
                for at, index, seq, _, _ in events[sent:due]:
                    if index in run.followed:
                        run.sent_at[(index, seq)] = started + at  # due, not handed over
                        if seq == 1:
                            on_first_event(index)
                batch = [(key, value) for _, _, _, key, value in events[sent:due]]
                acks += await send_partitioned(producer, topic, batch, PARTITIONS)
                sends.append((stamp - started, due - sent))
                sent = due
            await asyncio.sleep(linger)
        await asyncio.gather(*acks)
        return sends
    finally:
        await producer.stop()


def steady_rate(sends: list[tuple[float, int]], start: float, end: float) -> float:
    """Events/s actually sent between `start` and `end` s: the schedule ramps up over the
    first jobs' lives and down over the last ones', and is at the full rate in between."""
    return sum(n for at, n in sends if start <= at < end) / (end - start)


async def bare_consumer(
    bootstrap: str, topic: str, run: Run, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Note when each timed event reaches a consumer that does nothing else."""
    followed = {run.jobs[i].job_id.encode(): i for i in run.followed}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,  # the projector's
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ready.set()
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100)
            now = clock()
            for records in fetched.values():
                for record in records:
                    index = followed.get(record.key or b"")
                    if index is not None and record.value is not None:
                        seq = json.loads(record.value)["seq"]
                        if seq >= 2:
                            run.delivered_at[(index, seq)] = now
    finally:
        await consumer.stop()


async def change_listener(
    redis_url: str, run: Run, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Note when the merge announces each timed event in Redis (its SPUBLISH carries the
    job's public seq): produce to stored, the api's share excluded."""
    channels = {
        change_channel(DEFAULT_VERSION, run.jobs[i].tenant, run.jobs[i].job_id): i
        for i in run.followed
    }
    seen = dict.fromkeys(run.followed, 1)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.ssubscribe(*channels)
        ready.set()
        while not stop.is_set():
            message = await pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "smessage":
                continue
            now = clock()
            index = channels[message["channel"].decode()]
            seq = int(message["data"])
            for stored in range(seen[index] + 1, seq + 1):
                run.stored_at[(index, stored)] = now
            seen[index] = max(seen[index], seq)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await redis.aclose()


async def wait_until_projecting(bootstrap: str, port: int, timeout: float = 90) -> None:
    """Produce one probe job and long-poll it until visible: the projector has joined."""
    probe = Job(-1, "tenant-probe", ulid())
    producer = fast_producer(bootstrap)
    await producer.start()
    try:
        records = job_events(probe.tenant, probe.job_id, 3)[:2]  # created, queued
        await asyncio.gather(*await send_partitioned(producer, TOPIC, records, PARTITIONS))
    finally:
        await producer.stop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token(probe.tenant)}"}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            writer.write(get_request(f"/v1/jobs/{probe.job_id}?wait=5&after_seq=1", headers))
            status, _ = await read_response(reader)
            if status == 200:
                return
        raise RuntimeError(f"the probe job was not visible within {timeout:.0f} s")
    finally:
        writer.close()
        await writer.wait_closed()


def latency_summary(latencies: list[float]) -> dict[str, Any]:
    """Percentiles in ms of latencies in seconds."""
    ordered = sorted(latency * 1000 for latency in latencies)
    return {
        "samples": len(ordered),
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else 0.0,
        "mean_ms": statistics.fmean(ordered) if ordered else 0.0,
        # For the chart: the latency at every percent, and at 99.9 %.
        "percentiles_ms": [percentile(ordered, q / 100) for q in range(101)],
        "p999_ms": percentile(ordered, 0.999),
    }


class CpuMeter:
    """Cores each process used between construction and `read()`: what competed."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._started = clock()

    def read(self) -> dict[str, float]:
        window = clock() - self._started
        return {
            name: round((cpu_seconds(pid) - self._before[name]) / window, 2)
            for name, pid in self._pids.items()
        }


async def broker_phase(
    bootstrap: str,
    topic: str,
    events: list[Scheduled],
    baseline: Run,
    pids: dict[str, int],
    linger: float,
) -> dict[str, float]:
    """Produce the schedule into `topic`, a topic of its own, timed by the bare consumer
    alone; returns the cores used meanwhile."""
    stop, consuming = asyncio.Event(), asyncio.Event()
    consumer = asyncio.create_task(bare_consumer(bootstrap, topic, baseline, consuming, stop))
    await consuming.wait()
    cpu = CpuMeter(pids)
    await produce_paced(bootstrap, topic, events, baseline, lambda index: None, linger)
    deadline = clock() + WAIT_SECONDS
    timed = sum(1 for _, seq in baseline.sent_at if seq >= 2)  # as the consumer times them
    while len(baseline.delivered_at) < timed and clock() < deadline:
        await asyncio.sleep(0.1)
    used = cpu.read()
    stop.set()
    await consumer
    missing = timed - len(baseline.delivered_at)
    if missing:
        baseline.errors.append(f"{missing} events not delivered to the bare consumer")
    return used


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    stack = start_stack(workdir)
    started = []
    try:
        lingers = [args.linger_ms, *([args.compare_linger_ms] if args.compare_linger_ms else [])]
        baseline_topics = {ms: f"{BASELINE_TOPIC}.{ms:g}ms" for ms in lingers}
        await create_topics(
            stack.kafka_bootstrap,
            {TOPIC: PARTITIONS, f"{TOPIC}.dlq": 1}
            | dict.fromkeys(baseline_topics.values(), PARTITIONS),
        )
        jobs, events = schedule(args.rate, args.seconds, args.in_flight, args.events_per_job)
        start_every = args.events_per_job / args.rate
        followed = {
            job.index
            for job in jobs
            if job.index * start_every >= args.warmup and job.index % args.watch_every == 0
        }
        print(
            f"producing {len(events):,} events over {len(jobs):,} jobs at {args.rate:,.0f}/s, "
            f"timing {len(followed):,} jobs: to a bare consumer, then through the projector "
            "and the api ...",
            flush=True,
        )
        pids = {p.name: p.process.pid for p in stack.local.values()} | {"bench": os.getpid()}
        baselines, broker_cpu = {}, {}
        for ms, topic in baseline_topics.items():
            baselines[ms] = Run(jobs, followed)
            broker_cpu[ms] = await broker_phase(
                stack.kafka_bootstrap, topic, events, baselines[ms], pids, ms / 1000
            )

        env = stack.env() | {"KAFKA_TOPIC": TOPIC, "JWT_SECRET": SECRET}
        started.append(start_projector(env, workdir, "projector-freshness"))
        api = start_api(env, workdir)
        started.append(api)
        shared = Run(jobs, followed)
        tokens = {f"tenant-{n}": token(f"tenant-{n}") for n in range(TENANTS)}
        await wait_until_projecting(stack.kafka_bootstrap, api.port)

        followers: list[asyncio.Task[None]] = []

        def on_first_event(index: int) -> None:
            task = follow(api.port, jobs[index], args.events_per_job, shared, tokens)
            followers.append(asyncio.create_task(task))

        stop, listening = asyncio.Event(), asyncio.Event()
        listener = asyncio.create_task(change_listener(stack.redis_url, shared, listening, stop))
        await listening.wait()
        cpu = CpuMeter(pids | {p.name: p.process.pid for p in started})
        sends = await produce_paced(
            stack.kafka_bootstrap, TOPIC, events, shared, on_first_event, args.linger_ms / 1000
        )
        await asyncio.wait_for(asyncio.gather(*followers), WAIT_SECONDS * 3)
        used = cpu.read()
        stop.set()
        await listener
        for process in started:
            if process.process.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
    finally:
        for process in started:
            process.stop()
        stack.stop()

    visible = latency_summary(shared.latencies(shared.visible_at))
    baseline = baselines[args.linger_ms]
    delivered = latency_summary(baseline.latencies(baseline.delivered_at))
    stored = latency_summary(shared.latencies(shared.stored_at))
    api_share = latency_summary(
        [at - shared.stored_at[e] for e, at in shared.visible_at.items() if e in shared.stored_at]
    )
    ramp = (args.events_per_job - 1) * args.in_flight / args.rate
    errors = [*(e for b in baselines.values() for e in b.errors), *shared.errors]
    compared = None
    if args.compare_linger_ms:
        other = baselines[args.compare_linger_ms]
        compared = {
            "linger_ms": args.compare_linger_ms,
            "broker_delivery": latency_summary(other.latencies(other.delivered_at)),
            "cpu_cores_used": broker_cpu[args.compare_linger_ms],
        }
    return {
        "rate_target_events_per_s": args.rate,
        "linger_ms": args.linger_ms,
        "produced_events": len(events),
        "produce_seconds": sends[-1][0],
        "produced_events_per_s": steady_rate(sends, ramp, args.seconds),
        "jobs": len(jobs),
        "jobs_in_flight": args.in_flight,
        "events_per_job": args.events_per_job,
        "followed_jobs": len(followed),
        "visible": visible,
        "broker_delivery": delivered,
        "stored": stored,
        "stored_to_visible": api_share,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": visible["p99_ms"] <= TARGET_P99_MS and not errors,
        "visible_p99_vs_target": visible["p99_ms"] / TARGET_P99_MS,
        "visible_p99_vs_broker_p99": visible["p99_ms"] / max(delivered["p99_ms"], 1e-9),
        # Cores busy per process while producing: on a shared machine, what competed.
        "cpu_cores_used": used,
        "broker_phase_cpu_cores_used": broker_cpu[args.linger_ms],
        # The broker alone with the producer sending more often (more, smaller batches).
        "broker_at_compare_linger": compared,
        "errors": len(errors),
        "error_examples": errors[:5],
    }


# The sizes of `python -m bench.run_all` and of its `--quick` check.
FULL: list[str] = []
QUICK = ["--seconds", "3", "--warmup", "1"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s produced")
    parser.add_argument("--seconds", type=float, default=30.0, help="of producing")
    parser.add_argument("--in-flight", type=int, default=500, help="jobs receiving events")
    parser.add_argument("--events-per-job", type=int, default=10)
    parser.add_argument("--watch-every", type=int, default=10, help="follow every n-th job")
    parser.add_argument("--warmup", type=float, default=3.0, help="s before jobs are followed")
    parser.add_argument(
        "--linger-ms",
        type=float,
        default=20.0,
        help="the producer sends what came due this often (its linger.ms)",
    )
    parser.add_argument(
        "--compare-linger-ms",
        type=float,
        default=5.0,
        help="also time the broker alone with the producer sending this often (0: not)",
    )
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args))


def main() -> None:
    result = measure(parser().parse_args())
    for name in ("broker_delivery", "stored", "visible", "stored_to_visible"):
        summary = result[name]
        print(
            f"{name:16s} p50 {summary['p50_ms']:7.1f} ms  p99 {summary['p99_ms']:7.1f} ms  "
            f"max {summary['max_ms']:7.1f} ms  ({summary['samples']:,} events)"
        )
    print(
        f"produced {result['produced_events_per_s']:,.0f} events/s; p99 target "
        f"{TARGET_P99_MS:.0f} ms: {'met' if result['meets_target'] else 'MISSED'}; "
        f"errors {result['errors']}"
    )
    print(f"cores used: {result['cpu_cores_used']}")
    print(f"cores used by the broker-only phase: {result['broker_phase_cpu_cores_used']}")
    if compared := result["broker_at_compare_linger"]:
        summary = compared["broker_delivery"]
        print(
            f"broker alone, producer sending every {compared['linger_ms']:g} ms: "
            f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms; "
            f"cores used: {compared['cpu_cores_used']}"
        )
    print(f"wrote {write_result('freshness', result)}")


if __name__ == "__main__":
    main()
