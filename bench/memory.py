"""Memory: Redis bytes per job, and the projector's resident set over a million events.

- Bytes per job: `--jobs` finished jobs (each a `created` and a public `succeeded` event with
  2 artifacts, `bench.common.succeeded_job`) are produced into the topic and projected by a
  real `python -m projector run` from those real events. Redis's `used_memory` (INFO memory)
  is read before (the merge function already loaded) and after (the projector stopped, so
  that its connections' buffers are not counted); the difference over the number of jobs is
  the figure. A sample of the stored hashes is then taken apart - MEMORY USAGE per key, the
  key name, each field's length, the encoding - to show what the figure is made of. The
  baseline is the data itself: the bytes of the key and its field values.
- Reads by encoding: up to 10,000 stored jobs copied once as listpacks and once as
  hashtables (the encoding Redis gives a hash with a value longer than
  `hash-max-listpack-value`), then Redis's own time per `HGETALL` (the api's read) and per
  `HMGET h o p` (the merge's) of jobs drawn at random, from `INFO commandstats`, in
  alternating rounds: is the compact encoding slower to read?
- Projector RSS: `bench.projector` over `--projector-events` events on a tenth as many jobs,
  without its baselines, read at 10 %, 50 % and 100 % of the stream (0 skips it).
`--hash-max-listpack-value N` sets that Redis setting on the bench's Redis before projecting,
to measure the stored format under another hash encoding than the local stack's.
Target: at most 1 KiB per job. `python -m bench.memory [--jobs 100000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import projector as projector_bench
from bench.common import produce_fast, succeeded_job, write_result
from contracts.job_state import F_HEAD, F_ORIGIN, F_PUBLIC, decode_state, job_key_pattern
from devstack import create_topics, start_stack
from projector.replay.versions import text
from projector.store import load_functions

TOPIC = "bench.memory"
VERSION = "memory"
GROUP = f"jobs-projector.{VERSION}"
PARTITIONS = 4
TARGET_BYTES_PER_JOB = 1024
SAMPLE = 1000
FIELDS = {F_HEAD: "head (status, manifest)", F_ORIGIN: "origin", F_PUBLIC: "public event"}


async def memory_info(redis: Redis) -> dict[str, int]:
    info = await redis.info("memory")
    return {name: int(info[name]) for name in ("used_memory", "used_memory_dataset")}


async def breakdown(redis: Redis, sample: int) -> dict[str, Any]:
    """What a stored job is made of, averaged over `sample` job hashes."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=job_key_pattern(VERSION), count=1000):
        keys.append(key)
        if len(keys) == sample:
            break
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.object("encoding", key)
        for name in FIELDS:
            pipe.hstrlen(key, name)
    replies = await pipe.execute()
    per_key = 2 + len(FIELDS)
    rows = [replies[i : i + per_key] for i in range(0, len(replies), per_key)]
    listpack = await redis.config_get("hash-max-listpack-*")
    stored = {text(k): text(v) for k, v in (await redis.hgetall(keys[0])).items()}
    state = decode_state(stored)
    manifest = [] if state.head is None else json.loads(state.head.manifest_json)
    public = stored.get(F_PUBLIC, "")  # as stored: does it hold the artifacts again?
    fields = {name: statistics.fmean(row[2 + n] for row in rows) for n, name in enumerate(FIELDS)}
    return {
        "sampled_keys": len(rows),
        "memory_usage_bytes": statistics.fmean(row[0] for row in rows),
        "encodings": dict(Counter(text(row[1]) for row in rows)),
        "key_name_bytes": statistics.fmean(len(key) for key in keys),
        "field_value_bytes": fields,
        "data_bytes": statistics.fmean(len(key) for key in keys) + sum(fields.values()),
        "hash_max_listpack": {text(k): int(text(v)) for k, v in listpack.items() if k and v},
        # The succeeded event is both the head (its artifacts are the manifest) and the
        # public event (with the same artifacts): are they stored twice?
        "artifacts_stored_twice": bool(manifest) and all(a["key"] in public for a in manifest),
    }


def drivers(bytes_per_job: float, parts: dict[str, Any]) -> list[str]:
    """What drives the per-job figure, largest first, in words."""
    said = []
    values = parts["field_value_bytes"]
    largest = max(values, key=values.get)
    said.append(
        f"the `{largest}` field ({FIELDS[largest]}, {values[largest]:.0f} B) is the largest "
        f"part of the {parts['data_bytes']:.0f} B of data per job (key name "
        f"{parts['key_name_bytes']:.0f} B)"
    )
    if parts["artifacts_stored_twice"]:
        said.append(
            "a finished job's artifacts are stored twice: in `h` as the manifest and in `p` "
            "as the public event's artifacts"
        )
    else:
        said.append(
            "a finished job's artifacts are stored once: in `h` as the manifest, which `p` "
            "refers to"
        )
    limit = parts["hash_max_listpack"].get("hash-max-listpack-value", 64)
    if "hashtable" in parts["encodings"]:
        said.append(
            f"values longer than hash-max-listpack-value ({limit} B) make the hash a hashtable "
            "(a dict with an entry and an SDS string per field) instead of one compact listpack"
        )
    else:
        said.append(
            f"every job hash is one listpack (its values within hash-max-listpack-value, "
            f"{limit} B): fields and values in one allocation"
        )
    overhead, data = bytes_per_job - parts["data_bytes"], parts["data_bytes"]
    said.append(
        f"Redis's own structures add {overhead:.0f} B per job ({bytes_per_job / data:.2f} times "
        "the data): the key's dict entry and object headers, the hash's, allocator rounding"
    )
    return said


READ_KEYS = 10_000
READ_ROUNDS = 40
READS_PER_ROUND = 2_000
READ_COMMANDS = ("hgetall", "hmget")
ENCODINGS = ("listpack", "hashtable")


async def read_cost_by_encoding(redis: Redis, sample: int) -> dict[str, Any]:
    """Redis's time per HGETALL and per HMGET h o p of `sample` stored jobs, as listpacks and
    as hashtables (copies of the same hashes), in µs. Each round reads jobs drawn at random
    (as readers ask for them; not one job again and again, which the CPU's caches would
    keep), the same ones in both encodings, in the order opposite to the round before (ABBA),
    so that the machine's drift - other processes share its cores - favours neither."""
    copies = await copies_by_encoding(redis, sample)
    usec: dict[str, dict[str, list[float]]] = {
        encoding: {command: [] for command in READ_COMMANDS} for encoding in copies
    }
    rng = random.Random(1)
    for round_ in range(READ_ROUNDS):
        jobs = [rng.randrange(sample) for _ in range(READS_PER_ROUND)]
        order = list(copies.items())[:: 1 if round_ % 2 == 0 else -1]
        for command in READ_COMMANDS:
            for encoding, names in order:
                reads = [names[job] for job in jobs]
                usec[encoding][command].append(await server_usec(redis, command, reads))
    await redis.delete(*(name for names in copies.values() for name in names))
    calls = READ_ROUNDS * READS_PER_ROUND
    return {
        "sampled_keys": sample,
        "rounds": READ_ROUNDS,
        "reads_per_round": READS_PER_ROUND,
        "usec_per_call": {
            encoding: {command: sum(series) / calls for command, series in by.items()}
            for encoding, by in usec.items()
        },
        # Per round, the listpack's time over the hashtable's: the median of those.
        "listpack_vs_hashtable": {
            command: statistics.median(
                a / b
                for a, b in zip(usec["listpack"][command], usec["hashtable"][command], strict=True)
            )
            for command in READ_COMMANDS
        },
    }


async def copies_by_encoding(redis: Redis, sample: int) -> dict[str, list[str]]:
    """`sample` stored jobs copied once as listpacks and once as hashtables: the encoding
    depends only on hash-max-listpack-value when a hash is written."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=job_key_pattern(VERSION), count=1000):
        keys.append(key)
        if len(keys) == sample:
            break
    configured = await redis.config_get("hash-max-listpack-value")
    limit = int(next(iter(configured.values())) or 64)
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    stored: list[dict[bytes, bytes]] = await pipe.execute()
    copies: dict[str, list[str]] = {}
    for encoding, value_limit in zip(ENCODINGS, (1 << 20, 0), strict=True):
        await redis.config_set("hash-max-listpack-value", value_limit)
        copies[encoding] = [f"bench:{encoding}:{{{n}}}" for n in range(len(keys))]
        for copy, fields in zip(copies[encoding], stored, strict=True):
            pipe.hset(copy, mapping=fields)  # type: ignore[arg-type]
        await pipe.execute()
        for copy in copies[encoding]:
            pipe.object("encoding", copy)
        found = {text(reply) for reply in await pipe.execute()}
        if found != {encoding}:
            raise RuntimeError(f"copies meant as {encoding} are {found}")
    await redis.config_set("hash-max-listpack-value", limit)
    return copies


async def server_usec(redis: Redis, command: str, names: list[str]) -> float:
    """Redis's own time (INFO commandstats) for `command` on each of `names`, in µs."""
    await redis.config_resetstat()
    pipe = redis.pipeline(transaction=False)
    for name in names:
        if command == "hgetall":
            pipe.hgetall(name)
        else:
            pipe.hmget(name, F_HEAD, F_ORIGIN, F_PUBLIC)
    await pipe.execute()
    stats = await redis.info("commandstats")
    return float(stats[f"cmdstat_{command}"]["usec"])


async def redis_bytes_per_job(jobs: int, listpack_value: int | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    stack = start_stack(workdir)
    redis = Redis.from_url(stack.redis_url)
    try:
        if listpack_value is not None:
            await redis.config_set("hash-max-listpack-value", listpack_value)
        await create_topics(stack.kafka_bootstrap, {TOPIC: PARTITIONS, f"{TOPIC}.dlq": 1})
        records = [record for n in range(jobs) for record in succeeded_job(n)]
        await load_functions(redis)
        keys_before, before = await redis.dbsize(), await memory_info(redis)
        await produce_fast(stack.kafka_bootstrap, TOPIC, records, PARTITIONS)
        env = stack.env() | {"KAFKA_TOPIC": TOPIC, "PROJECTION_VERSION": VERSION}
        # Runs the projector until it committed every event, then stops it.
        drained = await projector_bench.measure_ours(
            env, workdir, stack.kafka_bootstrap, TOPIC, len(records), GROUP
        )
        stored, after = await redis.dbsize() - keys_before, await memory_info(redis)
        if stored != jobs:
            raise RuntimeError(f"{stored} keys were added for {jobs} jobs")
        per_job = (after["used_memory"] - before["used_memory"]) / jobs
        parts = await breakdown(redis, min(SAMPLE, jobs))
        reads = await read_cost_by_encoding(redis, min(READ_KEYS, jobs))
        return {
            "jobs": jobs,
            "events": len(records),
            "projected_by": "python -m projector run, from the produced events",
            "projector_events_per_s": drained.events_per_s,
            "used_memory_before": before["used_memory"],
            "used_memory_after": after["used_memory"],
            "bytes_per_job": per_job,
            "dataset_bytes_per_job": (after["used_memory_dataset"] - before["used_memory_dataset"])
            / jobs,
            "target_bytes_per_job": TARGET_BYTES_PER_JOB,
            "bytes_per_job_vs_target": per_job / TARGET_BYTES_PER_JOB,
            "bytes_per_job_vs_data": per_job / parts["data_bytes"],
            "meets_target": per_job <= TARGET_BYTES_PER_JOB,
            "breakdown": parts,
            "drivers": drivers(per_job, parts),
            "reads_by_encoding": reads,
        }
    finally:
        await redis.aclose()
        stack.stop()


async def run(
    jobs: int, projector_events: int, listpack_value: int | None = None
) -> dict[str, Any]:
    result = await redis_bytes_per_job(jobs, listpack_value)
    if projector_events:
        projected = await projector_bench.run(
            projector_events, projector_events // 10, naive_window=0, baselines=False
        )
        result["projector"] = projected
    return result


# The sizes of `python -m bench.run_all` and of its `--quick` check.
FULL = ["--projector-events", "1000000"]
QUICK = ["--jobs", "5000"]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument(
        "--projector-events", type=int, default=0, help="e.g. 1000000: the projector's RSS"
    )
    parser.add_argument(
        "--hash-max-listpack-value",
        type=int,
        default=None,
        help="set on the bench's Redis before projecting (default: the local stack's setting)",
    )
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args.jobs, args.projector_events, args.hash_max_listpack_value))


def main() -> None:
    result = measure(parser().parse_args())
    print(json.dumps(result, indent=2))
    print(
        f"{result['bytes_per_job']:,.0f} B per job "
        f"({'meets' if result['meets_target'] else 'ABOVE'} the {TARGET_BYTES_PER_JOB} B target)"
    )
    for line in result["drivers"]:
        print(f"- {line}")
    reads = result["reads_by_encoding"]
    for command, name in (("hgetall", "HGETALL"), ("hmget", "HMGET h o p")):
        listpack, hashtable = (reads["usec_per_call"][e][command] for e in ENCODINGS)
        print(
            f"- {name} of a job: {listpack:.2f} µs as a listpack, {hashtable:.2f} µs as a "
            f"hashtable (Redis's time per call; per round, the listpack's "
            f"{reads['listpack_vs_hashtable'][command]:.2f} times the hashtable's at the median)"
        )
    print(f"wrote {write_result('memory', result)}")


if __name__ == "__main__":
    main()
