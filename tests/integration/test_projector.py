"""The projector through the real broker and Redis: any delivery, poison, faults, crashes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from devstack.data import event, event_dict, ulid
from devstack.processes import LocalProcess
from projector.fold import fold
from tests.integration.projection import (
    assert_projection_equals_fold,
    differing_jobs,
    job_events,
    produce,
    produce_raw,
    projector_env,
    shuffled_with_duplicates,
    spawn,
    stored_state,
    wait_until_caught_up,
)
from tests.integration.support import consume_all

pytestmark = pytest.mark.integration


async def test_shuffled_and_duplicated_delivery_ends_equal_to_the_fold(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    events = job_events(jobs=120)
    delivery = shuffled_with_duplicates(events)
    await produce(kafka_bootstrap, topic, delivery[: len(delivery) // 2])
    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await produce(kafka_bootstrap, topic, delivery[len(delivery) // 2 :])
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(delivery))
    await assert_projection_equals_fold(redis, version, events)


POISON: list[tuple[str, bytes | None, str]] = [
    ("bad json", b'{"schema_version": 1,', "Invalid JSON"),
    ("not an object", b"[1, 2, 3]", "Input should be an object"),
    (
        "missing field",
        json.dumps({k: v for k, v in event_dict().items() if k != "seq"}).encode(),
        "seq",
    ),
    ("wrong type", json.dumps(event_dict() | {"seq": "5"}).encode(), "seq"),
    ("seq as float", json.dumps(event_dict() | {"seq": 5.0}).encode(), "seq"),
    ("out of range", json.dumps(event_dict() | {"seq": 2**53}).encode(), "seq"),
    ("other schema", json.dumps(event_dict() | {"schema_version": 2}).encode(), "schema_version"),
    ("bad tenant", json.dumps(event_dict() | {"tenant_id": "ACME"}).encode(), "tenant_id"),
    ("bad kind", json.dumps(event_dict() | {"kind": "exploded"}).encode(), "kind"),
    ("no value", None, "tombstone"),
    ("not utf-8", b'{"message": "\xff\xfe"}', "Invalid JSON"),
]


async def test_each_kind_of_poison_reaches_the_dead_letter_topic_and_the_stream_goes_on(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    good = job_events(jobs=10)
    key = b"01JDQ8Z3M4W8K2V7T6R5N4P3Q2"
    # Poison first, then good events on the same partitions: later events still land.
    await produce_raw(kafka_bootstrap, topic, [(key, value) for _, value, _ in POISON])
    await produce(kafka_bootstrap, topic, good)
    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(POISON) + len(good))
    await assert_projection_equals_fold(redis, version, good)

    dead = await consume_all(kafka_bootstrap, f"{topic}.dlq", expected=len(POISON))
    assert len(dead) == len(POISON)
    by_value = {record.value: record for record in dead}
    for name, value, reason_part in POISON:
        record = by_value[value]
        headers = dict(record.headers)
        assert record.key == key, name
        reason = headers["dlq.reason"].decode()
        assert reason_part in reason, f"{name}: {reason}"
        assert "\n" not in reason
        assert headers["dlq.topic"] == topic.encode()
        assert int(headers["dlq.partition"]) >= 0
        assert int(headers["dlq.offset"]) >= 0


async def test_redis_frozen_for_seconds_loses_nothing(
    kafka_bootstrap: str,
    topic: str,
    version: str,
    tmp_path: Path,
    own_redis: LocalProcess,
    own_redis_client: Redis,
    processes: list[LocalProcess],
) -> None:
    redis_url = f"redis://127.0.0.1:{own_redis.port}/0"
    events = job_events(jobs=80)
    delivery = shuffled_with_duplicates(events, seed=11)
    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await produce(kafka_bootstrap, topic, delivery[:100])
    await asyncio.sleep(8)  # the group join takes about 5 s here
    own_redis.pause()
    try:
        await produce(kafka_bootstrap, topic, delivery[100:])
        await asyncio.sleep(7)  # longer than the projector's Redis socket timeout
    finally:
        own_redis.resume()
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(delivery))
    await assert_projection_equals_fold(own_redis_client, version, events)
    assert processes[0].process.poll() is None, "the projector rode through the freeze"


async def test_projector_killed_while_a_batch_is_not_in_redis_restarts_to_the_fold(
    kafka_bootstrap: str,
    topic: str,
    version: str,
    tmp_path: Path,
    own_redis: LocalProcess,
    own_redis_client: Redis,
    processes: list[LocalProcess],
) -> None:
    redis_url = f"redis://127.0.0.1:{own_redis.port}/0"
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    events = job_events(jobs=60)
    delivery = shuffled_with_duplicates(events, seed=5)
    first, rest = delivery[:80], delivery[80:]
    processes.append(spawn(env, tmp_path, "projector-1"))
    await produce(kafka_bootstrap, topic, first)
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(first))

    # Hold every write: the next batch is fetched but cannot reach Redis.
    await own_redis_client.client_pause(30_000, all=False)
    try:
        await produce(kafka_bootstrap, topic, rest)
        await asyncio.sleep(3)  # fetched and blocked on its merge
        processes[0].process.kill()
        processes[0].process.wait(timeout=10)
        assert await differing_jobs(own_redis_client, version, events), (
            "the kill landed while the batch was not in Redis"
        )
    finally:
        await own_redis_client.client_unpause()

    processes.append(spawn(env, tmp_path, "projector-2"))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(delivery))
    await assert_projection_equals_fold(own_redis_client, version, events)


async def test_two_projectors_in_one_group_share_partitions_and_end_equal_to_the_fold(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    events = job_events(jobs=150)
    delivery = shuffled_with_duplicates(events, seed=3)
    processes.append(spawn(env, tmp_path, "projector-a"))
    processes.append(spawn(env, tmp_path, "projector-b"))
    await asyncio.sleep(12)  # both joined and the partitions split
    await produce(kafka_bootstrap, topic, delivery)
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(delivery))
    await assert_projection_equals_fold(redis, version, events)
    shares = [last_assignment(p.log_path.read_text()) for p in processes]
    assert all(shares), f"each member owns partitions: {shares}"
    assert not shares[0] & shares[1], f"no partition is owned twice: {shares}"
    assert shares[0] | shares[1] == {0, 1, 2, 3}
    assert all(p.process.poll() is None for p in processes)


def last_assignment(log: str) -> set[int]:
    lines = [line for line in log.splitlines() if "assigned to partitions" in line]
    return {int(n) for n in re.findall(r"partition=(\d+)", lines[-1])} if lines else set()


async def test_a_redis_that_lost_its_functions_gets_them_loaded_again(
    own_redis: LocalProcess, own_redis_client: Redis, version: str
) -> None:
    from projector.redis_client import connect_redis
    from projector.store import ProjectionStore, load_functions
    from tests.integration.projection import expected_states

    events = job_events(jobs=3)
    client = await connect_redis(f"redis://127.0.0.1:{own_redis.port}/0")
    try:
        await load_functions(client)
        await own_redis_client.function_flush()  # as after a restart without persistence
        await ProjectionStore(client, version).merge(expected_states(events))
    finally:
        await client.aclose()
    await assert_projection_equals_fold(own_redis_client, version, events)


def stolen(bucket: str, key: str, seq: int) -> dict[str, Any]:
    artifact = {"bucket": bucket, "key": key, "kind": "on_model_render", "role": "final"}
    return event_dict(tenant_id="evil", seq=seq, kind="succeeded", artifacts=[artifact])


async def test_an_event_naming_storage_its_tenant_does_not_own_is_dead_lettered(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
) -> None:
    """A worker of tenant `evil` names another tenant's object, or a bucket of backups: the
    api would sign it with its own credentials. The projector refuses both."""
    attacks = [
        ("another tenant's key", stolen("renders", "t/acme/secret/final.png", 2)),
        ("another bucket", stolen("prod-backups", "tenants/evil/final.png", 3)),
        ("a dot segment", stolen("renders", "tenants/evil/../acme/secret.png", 4)),
    ]
    own = event(tenant_id="evil", seq=1, kind="queued")
    await produce_raw(
        kafka_bootstrap, topic, [(b"k", json.dumps(doc).encode()) for _, doc in attacks]
    )
    await produce(kafka_bootstrap, topic, [own])
    env = projector_env(kafka_bootstrap, topic, redis_url, version)
    processes.append(spawn(env | {"ARTIFACT_KEY_PREFIX": "tenants/{tenant_id}/"}, tmp_path))
    await wait_until_caught_up(kafka_bootstrap, topic, version, len(attacks) + 1)
    await assert_projection_equals_fold(redis, version, [own])
    dead = await consume_all(kafka_bootstrap, f"{topic}.dlq", expected=len(attacks))
    reasons = sorted(dict(record.headers)["dlq.reason"].decode() for record in dead)
    assert reasons == [
        "artifacts.0: bucket 'prod-backups' is not one of ARTIFACT_BUCKETS",
        "artifacts.0: key must hold no '.' or '..' path segment",
        "artifacts.0: key must start with 'tenants/evil/' (ARTIFACT_KEY_PREFIX) for tenant evil",
    ]


@pytest.mark.parametrize("order", ["succeeded first", "failed first"])
async def test_twins_give_the_same_job_in_either_delivery_order(
    kafka_bootstrap: str,
    topic: str,
    redis_url: str,
    redis: Redis,
    version: str,
    tmp_path: Path,
    processes: list[LocalProcess],
    order: str,
) -> None:
    """The same seq and event_id, different content (a succeeded and a failed): one fixed
    order decides, not the delivery (CONTRACT §2)."""
    twin_id, job_id = ulid(), ulid()
    queued = event(job_id=job_id, seq=1, kind="queued")
    succeeded = event(job_id=job_id, seq=2, kind="succeeded", event_id=twin_id)
    failed = event(job_id=job_id, seq=2, kind="failed", event_id=twin_id, message="boom")
    twins = [succeeded, failed] if order == "succeeded first" else [failed, succeeded]
    processes.append(spawn(projector_env(kafka_bootstrap, topic, redis_url, version), tmp_path))
    await produce(kafka_bootstrap, topic, [queued, twins[0]])
    await wait_until_caught_up(kafka_bootstrap, topic, version, 2)
    await produce(kafka_bootstrap, topic, [twins[1]])  # a later batch: the Lua merge decides
    await wait_until_caught_up(kafka_bootstrap, topic, version, 3)
    state = await stored_state(redis, version, ("acme", job_id))
    assert state == fold([queued, succeeded, failed])
    assert state.head is not None
    assert state.head.status == "SUCCEEDED"
