"""Freshness: the time from producing an event to seeing it over HTTP, at a steady rate.

A paced producer writes the lifecycles of many jobs into the topic at `--rate` events/s
(`--in-flight` jobs at a time, each receiving `--events-per-job` events: created, queued,
stages, succeeded), projected by a real `python -m projector run` and read through a real
`python -m api`. Like a Kafka producer with `linger.ms`, it sends what came due every
`--linger-ms`, on a fixed grid (one record batch per partition), and an event's time counts
from the moment it came due, so the wait in the producer is part of the figure. Every
`--watch-every`-th job is followed by a client long-polling
`GET /v1/jobs/{id}?wait=…&after_seq=<the last seq it saw>` (CONTRACT §3): the answer comes as
soon as `latest_event.seq` passes `after_seq`, and an answer showing seq s makes every event
of the job up to s visible at the moment it arrived. An event's freshness is that moment
minus the moment it came due, both read from this process's clock.
The job's `created` event (seq 1) never shows as `latest_event`, so seqs 2 and up are timed.

Baseline, in the same run and on the same broker: the same schedule is first produced into a
topic of its own, read by a bare aiokafka consumer assigned every partition, with the
projector's fetch settings (`--fetch-max-wait-ms`), which notes when each timed event
reaches it: what the broker alone costs a consumer like the projector's. It runs before the
projector's phase, not beside it, because a second consumer on the topic doubles the broker's
fetch work (Tansu's in-memory fetch costs grow with the partition's log: measured, one
consumer of a 5,000 events/s topic took Tansu from 0.16 to 0.97 of a core over 40 s), and
the figure it is compared with would pay for the comparison. The same growth is why the
producer's batching matters here: Tansu's fetch work grows with the number of record batches
in the log, so the broker-only phase is also run with the producer sending every
`--compare-linger-ms` (in the first run only), to show what the broker alone costs then.

Where the time goes, per stage (p50 and p99; "exact" stages are timed per event on this
process's clock, the others come from the projector's own histograms, scraped before and
after the timed phase, read between bucket bounds as Prometheus's `histogram_quantile` does):

- produced -> handed to the producer: the producer's linger (exact);
- the broker alone, handed to the producer -> delivered to the bare consumer (exact): what
  the next stage would be with nothing but fetching to do;
- handed to the producer -> fetched by the projector: from a record's Kafka timestamp (set by
  this producer, wall clock, in whole ms) to its hand-over by the projector's consumer
  (`projector_fetch_delay_seconds`, a sample of each batch, every event of the phase);
- fetched -> merged, per batch (`projector_batch_merged_seconds`): validation, fold, the wait
  for the batches in flight and the merge; and the merge's round trip alone
  (`projector_merge_seconds`), the batches' sizes (`projector_batch_records`);
- produced -> merged in Redis (exact): a subscriber to the merge's change announcements;
- merged -> visible over HTTP (exact): the api's share;
- the projector's pauses meanwhile: garbage collections and event-loop lag.

Targets: produced -> visible p99 at most 50 ms, merged -> visible p99 at most 10 ms.
`--runs N` measures N times, each on a fresh stack with its own broker-alone floor, and gives
the median of each figure over the runs (the machines here are noisy: give medians of five).
`python -m bench.freshness [--rate 5000 --seconds 30 --runs 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
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
from contracts.job_state import (
    DEFAULT_VERSION,
    F_PUBLIC,
    change_channel,
    split_groups,
    stored_seq,
)
from devstack import create_topics, start_stack
from devstack.data import ulid
from devstack.services import start_api, start_projector
from projector.settings import ProjectorSettings

FETCH_MAX_WAIT_MS: int = ProjectorSettings.model_fields["kafka_fetch_max_wait_ms"].default
BATCH_TIMEOUT_MS: int = ProjectorSettings.model_fields["batch_timeout_ms"].default

SECRET = "bench-freshness-secret-0123456789abcdef"  # noqa: S105 - a bench key
PARTITIONS = 4
TOPIC = "bench.freshness"
BASELINE_TOPIC = "bench.freshness.broker"  # the broker-only phases' (a suffix each)
TARGET_P99_MS = 50.0  # produced -> visible
API_TARGET_P99_MS = 10.0  # merged -> visible
WAIT_SECONDS = 10  # a long poll's hold; an event not visible by then is an error
TENANTS = 50
SEED = 5000
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
    handed_at: dict[tuple[int, int], float] = field(default_factory=dict)  # to the producer
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
    `rate` events/s overall, `in_flight` jobs receiving events at any time. Each event comes
    due at a random moment of its slot (seeded): on an exact schedule every followed job's
    events would come due on the producer's linger grid (both multiples of 20 ms at the
    defaults) and never wait in the producer."""
    gap, start_every = in_flight / rate, per_job / rate
    jitter = random.Random(SEED)
    jobs, events = [], []
    for index in range(max(1, round(rate * seconds / per_job))):
        job = Job(index, f"tenant-{index % TENANTS}", ulid())
        jobs.append(job)
        for seq, (key, value) in enumerate(job_events(job.tenant, job.job_id, per_job), 1):
            at = index * start_every + (seq - 1 + jitter.random()) * gap
            events.append((at, index, seq, key, value))
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
    """Send what came due every `linger` s (on a fixed grid, as a producer's `linger.ms`
    does: the sends' own time does not stretch the period), timing each event from the
    moment it came due, and wait for every acknowledgement; returns (seconds from the start,
    events sent) of every send."""
    producer = fast_producer(bootstrap)
    await producer.start()
    acks: list[asyncio.Future[Any]] = []
    sends: list[tuple[float, int]] = []
    try:
        started = clock()
        sent = ticks = 0
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
                        run.handed_at[(index, seq)] = stamp
                        if seq == 1:
                            on_first_event(index)
                batch = [(key, value) for _, _, _, key, value in events[sent:due]]
                acks += await send_partitioned(producer, topic, batch, PARTITIONS)
                sends.append((stamp - started, due - sent))
                sent = due
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * linger - clock()))
        await asyncio.gather(*acks)
        return sends
    finally:
        await producer.stop()


def steady_rate(sends: list[tuple[float, int]], start: float, end: float) -> float:
    """Events/s actually sent between `start` and `end` s: the schedule ramps up over the
    first jobs' lives and down over the last ones', and is at the full rate in between."""
    return sum(n for at, n in sends if start <= at < end) / (end - start)


async def bare_consumer(
    bootstrap: str,
    topic: str,
    run: Run,
    ready: asyncio.Event,
    stop: asyncio.Event,
    fetch_max_wait_ms: int,
) -> None:
    """Note when each timed event reaches a consumer that does nothing else."""
    followed = {run.jobs[i].job_id.encode(): i for i in run.followed}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,  # the projector's
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


_PUBLIC = F_PUBLIC.encode()


async def change_listener(
    redis_url: str, run: Run, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Note when the merge announces each timed event in Redis (its SPUBLISH carries the
    job's groups, and so its public seq): produce to stored, the api's share excluded."""
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
            fields = split_groups(message["data"]) or {}
            seq = stored_seq(fields.get(_PUBLIC))
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


# --- the projector's histograms ------------------------------------------------------------

# name -> [(labels, value)] of one scrape of a /metrics endpoint.
Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape_metrics(port: int) -> Scrape:
    """One scrape of the projector's /metrics (blocking: run it in a thread)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def histogram_window(
    before: Scrape, after: Scrape, name: str, **labels: str
) -> tuple[list[tuple[float, float]], float, float]:
    """A histogram's observations between two scrapes, of the series matching `labels`:
    (cumulative counts by upper bound, ascending; count; sum)."""

    def values(scrape: Scrape, suffix: str) -> dict[float, float]:
        found: dict[float, float] = {}
        for sample_labels, value in scrape.get(name + suffix, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                bound = float(sample_labels.get("le", "nan"))
                found[bound] = found.get(bound, 0.0) + value
        return found

    buckets_before, buckets_after = values(before, "_bucket"), values(after, "_bucket")
    buckets = sorted(
        (bound, count - buckets_before.get(bound, 0.0)) for bound, count in buckets_after.items()
    )
    count = sum(values(after, "_count").values()) - sum(values(before, "_count").values())
    total = sum(values(after, "_sum").values()) - sum(values(before, "_sum").values())
    return buckets, count, total


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The `q` quantile of cumulative buckets, interpolated linearly within the bucket that
    holds it (Prometheus's `histogram_quantile`); the highest finite bound past the last."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_summary(
    before: Scrape, after: Scrape, name: str, scale: float = 1000.0, **labels: str
) -> dict[str, Any]:
    """p50, p99 and mean of a projector histogram over the window (in ms by default)."""
    buckets, count, total = histogram_window(before, after, name, **labels)
    return {
        "samples": int(count),
        "p50": histogram_quantile(buckets, 0.50) * scale,
        "p99": histogram_quantile(buckets, 0.99) * scale,
        "mean": total / count * scale if count else 0.0,
        "sum": total * scale,
    }


def projector_stages(before: Scrape, after: Scrape) -> dict[str, Any]:
    """What the projector's histograms say about the timed phase (ms; sizes in records)."""
    gc = {
        str(generation): histogram_summary(
            before, after, "projector_gc_pause_seconds", generation=str(generation)
        )
        for generation in (0, 1, 2)
    }
    return {
        "fetch_delay": histogram_summary(before, after, "projector_fetch_delay_seconds"),
        "batch_merged": histogram_summary(before, after, "projector_batch_merged_seconds"),
        "merge_round_trip": histogram_summary(before, after, "projector_merge_seconds"),
        "batch_records": histogram_summary(before, after, "projector_batch_records", scale=1.0),
        "gc_pauses": gc,
        "loop_lag": histogram_summary(before, after, "projector_event_loop_lag_seconds"),
    }


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
    fetch_max_wait_ms: int,
) -> dict[str, float]:
    """Produce the schedule into `topic`, a topic of its own, timed by the bare consumer
    alone; returns the cores used meanwhile."""
    stop, consuming = asyncio.Event(), asyncio.Event()
    consumer = asyncio.create_task(
        bare_consumer(bootstrap, topic, baseline, consuming, stop, fetch_max_wait_ms)
    )
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


async def run(args: argparse.Namespace, compare: bool = True) -> dict[str, Any]:
    """One run on a fresh stack: the broker alone (at `--compare-linger-ms` too when
    `compare`), then the projector and the api."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    stack = start_stack(workdir)
    started = []
    compare_ms = args.compare_linger_ms if compare else 0
    try:
        lingers = [args.linger_ms, *([compare_ms] if compare_ms else [])]
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
        # By role, not by the process's name (Redis's names its port): runs compare by key.
        pids = {role: p.process.pid for role, p in stack.local.items()} | {"bench": os.getpid()}
        baselines, broker_cpu = {}, {}
        for ms, topic in baseline_topics.items():
            baselines[ms] = Run(jobs, followed)
            broker_cpu[ms] = await broker_phase(
                stack.kafka_bootstrap,
                topic,
                events,
                baselines[ms],
                pids,
                ms / 1000,
                args.fetch_max_wait_ms,
            )

        env = stack.env() | {
            "KAFKA_TOPIC": TOPIC,
            "JWT_SECRET": SECRET,
            "KAFKA_FETCH_MAX_WAIT_MS": str(args.fetch_max_wait_ms),
            "BATCH_TIMEOUT_MS": str(args.batch_timeout_ms),
        }
        projector = start_projector(env, workdir, "projector-freshness")
        started.append(projector)
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
        metrics_before = await asyncio.to_thread(scrape_metrics, projector.port)
        cpu = CpuMeter(pids | {p.name: p.process.pid for p in started})
        sends = await produce_paced(
            stack.kafka_bootstrap, TOPIC, events, shared, on_first_event, args.linger_ms / 1000
        )
        await asyncio.wait_for(asyncio.gather(*followers), WAIT_SECONDS * 3)
        used = cpu.read()
        metrics_after = await asyncio.to_thread(scrape_metrics, projector.port)
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
    lingered = latency_summary(
        [at - shared.sent_at[e] for e, at in shared.handed_at.items() if e in shared.visible_at]
    )
    baseline_fetched = latency_summary(
        [
            at - baseline.handed_at[e]
            for e, at in baseline.delivered_at.items()
            if e in baseline.handed_at
        ]
    )
    ramp = (args.events_per_job - 1) * args.in_flight / args.rate
    errors = [*(e for b in baselines.values() for e in b.errors), *shared.errors]
    compared = None
    if compare_ms:
        other = baselines[compare_ms]
        compared = {
            "linger_ms": compare_ms,
            "broker_delivery": latency_summary(other.latencies(other.delivered_at)),
            "cpu_cores_used": broker_cpu[compare_ms],
        }
    return {
        "rate_target_events_per_s": args.rate,
        "linger_ms": args.linger_ms,
        "fetch_max_wait_ms": args.fetch_max_wait_ms,
        "batch_timeout_ms": args.batch_timeout_ms,
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
        "handed_to_producer": lingered,
        "broker_handed_to_delivered": baseline_fetched,
        "projector": projector_stages(metrics_before, metrics_after),
        "target_p99_ms": TARGET_P99_MS,
        "stored_to_visible_target_p99_ms": API_TARGET_P99_MS,
        "meets_target": visible["p99_ms"] <= TARGET_P99_MS and not errors,
        "meets_stored_to_visible_target": api_share["p99_ms"] <= API_TARGET_P99_MS,
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
        help="also time the broker alone with the producer sending this often, in the first "
        "run (0: not)",
    )
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=FETCH_MAX_WAIT_MS,
        help="the projector's and the bare consumer's KAFKA_FETCH_MAX_WAIT_MS "
        "(default: the projector's default)",
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=int,
        default=BATCH_TIMEOUT_MS,
        help="the projector's BATCH_TIMEOUT_MS (default: the projector's default)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="measure this many times, each on a fresh stack with its own broker-alone "
        "floor, and give the median of each figure",
    )
    return parser


# The per-event summaries of a run, medians of which make the figures of several runs.
SUMMARIES = (
    "visible",
    "broker_delivery",
    "broker_handed_to_delivered",
    "stored",
    "stored_to_visible",
    "handed_to_producer",
)


def median_tree(values: list[Any], key: str = "") -> Any:
    """The median of numbers (the sum of counts named `samples`); of dicts, key by key; of
    lists of one length, item by item; otherwise the first value."""
    first = values[0]
    if all(isinstance(v, dict) for v in values):
        return {k: median_tree([v[k] for v in values if k in v], k) for k in first}
    if key == "samples":
        return sum(values)
    if all(isinstance(v, list) and len(v) == len(first) for v in values):
        return [median_tree([v[i] for v in values]) for i in range(len(first))]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    return first


def run_figures(result: dict[str, Any]) -> dict[str, Any]:
    """A run's p50 and p99 per stage, for the list of runs."""
    stages = {name: [result[name]["p50_ms"], result[name]["p99_ms"]] for name in SUMMARIES}
    projector = result["projector"]
    for name in ("fetch_delay", "batch_merged", "merge_round_trip", "loop_lag"):
        stages[f"projector_{name}"] = [projector[name]["p50"], projector[name]["p99"]]
    return stages | {"errors": result["errors"], "cpu_cores_used": result["cpu_cores_used"]}


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' medians, with the verdicts taken on them; every run's figures under `runs`."""
    if len(results) == 1:
        return results[0] | {"run_count": 1}
    combined = dict(results[0])  # the settings and sizes, the same in every run
    for name in (
        *SUMMARIES,
        "projector",
        "cpu_cores_used",
        "broker_phase_cpu_cores_used",
        "produced_events_per_s",
        "produce_seconds",
    ):
        combined[name] = median_tree([r[name] for r in results])
    for name in ("cpu_cores_used", "broker_phase_cpu_cores_used"):
        combined[name] = {role: round(cores, 3) for role, cores in combined[name].items()}
    visible, broker = combined["visible"], combined["broker_delivery"]
    errors = sum(r["errors"] for r in results)
    combined |= {
        "meets_target": visible["p99_ms"] <= TARGET_P99_MS and not errors,
        "meets_stored_to_visible_target": (
            combined["stored_to_visible"]["p99_ms"] <= API_TARGET_P99_MS
        ),
        "visible_p99_vs_target": visible["p99_ms"] / TARGET_P99_MS,
        "visible_p99_vs_broker_p99": visible["p99_ms"] / max(broker["p99_ms"], 1e-9),
        "errors": errors,
        "error_examples": [e for r in results for e in r["error_examples"]][:5],
        "run_count": len(results),
        "runs": [run_figures(r) for r in results],
    }
    return combined


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for number in range(args.runs):
        if args.runs > 1:
            print(f"run {number + 1} of {args.runs}", flush=True)
        results.append(asyncio.run(run(args, compare=number == 0)))
        if args.runs > 1:
            print_stages(results[-1])
    return combine(results)


def print_stages(result: dict[str, Any]) -> None:
    """The breakdown: per stage, p50 and p99 in ms."""
    projector = result["projector"]

    def exact(name: str) -> tuple[float, float, str]:
        summary = result[name]
        return summary["p50_ms"], summary["p99_ms"], f"{summary['samples']:,} events"

    def histogram(name: str, what: str) -> tuple[float, float, str]:
        summary = projector[name]
        return summary["p50"], summary["p99"], f"{summary['samples']:,} {what}, histogram"

    rows = [
        ("broker alone (bare consumer, own phase)", exact("broker_delivery")),
        ("  of which handed to the producer -> fetched", exact("broker_handed_to_delivered")),
        ("produced -> handed to the producer", exact("handed_to_producer")),
        ("handed to the producer -> fetched", histogram("fetch_delay", "records sampled")),
        ("fetched -> merged, per batch", histogram("batch_merged", "batches")),
        ("  of which the merge's round trip", histogram("merge_round_trip", "batches")),
        ("produced -> merged in Redis", exact("stored")),
        (
            f"merged -> visible (target p99 <= {API_TARGET_P99_MS:.0f})",
            exact("stored_to_visible"),
        ),
        (f"produced -> visible (target p99 <= {TARGET_P99_MS:.0f})", exact("visible")),
    ]
    print(f"{'stage':44s} {'p50 ms':>7s} {'p99 ms':>7s}")
    for label, (p50, p99, note) in rows:
        print(f"{label:44s} {p50:7.1f} {p99:7.1f}  ({note})")
    sizes, lag = projector["batch_records"], projector["loop_lag"]
    print(
        f"batches: p50 {sizes['p50']:.0f}, p99 {sizes['p99']:.0f}, mean {sizes['mean']:.0f} "
        f"records ({sizes['samples']:,} batches); event-loop lag p50 {lag['p50']:.2f} ms, "
        f"p99 {lag['p99']:.2f} ms"
    )
    print(
        "gc pauses: "
        + ", ".join(
            f"gen {generation}: {pauses['samples']:,} totalling {pauses['sum']:.1f} ms "
            f"(p99 {pauses['p99']:.2f} ms)"
            for generation, pauses in projector["gc_pauses"].items()
        )
    )


def main() -> None:
    result = measure(parser().parse_args())
    runs = result["run_count"]
    if runs > 1:
        print(f"\nmedians of {runs} runs:")
        for number, figures in enumerate(result["runs"], 1):
            print(
                f"run {number}: broker p99 {figures['broker_delivery'][1]:.1f}, merged p99 "
                f"{figures['stored'][1]:.1f}, merged -> visible p99 "
                f"{figures['stored_to_visible'][1]:.1f}, visible p99 "
                f"{figures['visible'][1]:.1f} ms"
            )
    print(
        f"fetch wait {result['fetch_max_wait_ms']} ms, batch timeout "
        f"{result['batch_timeout_ms']} ms, producer linger {result['linger_ms']:g} ms"
    )
    print_stages(result)
    print(
        f"produced {result['produced_events_per_s']:,.0f} events/s; produced -> visible p99 "
        f"target {TARGET_P99_MS:.0f} ms: {'met' if result['meets_target'] else 'MISSED'}; "
        f"merged -> visible p99 target {API_TARGET_P99_MS:.0f} ms: "
        f"{'met' if result['meets_stored_to_visible_target'] else 'MISSED'}; "
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
