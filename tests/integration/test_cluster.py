"""The projector, the api and the replay tools against a real 3-primary Redis Cluster
(DESIGN "Scaling out"): `REDIS_URL` names one node; every process finds the cluster from it.

One cluster and one topic serve the module: two real projectors build two versions from the
same shuffled, duplicated events, the first one active. Hash tags keep each job in one slot,
the merge function is loaded on every primary, long polls are woken by sharded pub/sub on the
node that owns the job, and the replay tools compare and drop versions across all nodes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from api.app import create_app
from api.notifier import SUBSCRIBE_CONFIRM_SECONDS
from contracts.events import JobEvent
from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    JobState,
    change_channel,
    decode_state,
    job_key,
    job_key_pattern,
)
from devstack import Stack, create_topics
from devstack.data import event, ulid
from devstack.processes import LocalCluster, LocalProcess, start_redis_cluster
from devstack.services import start_api
from projector.fold import JobRef
from projector.store import LIBRARY as DIGEST_LIBRARY
from projector.store import LIBRARY as MERGE_LIBRARY
from projector.store import MERGE_FUNCTION
from tests.integration.projection import (
    expected_states,
    job_events,
    produce,
    projector_env,
    shuffled_with_duplicates,
    spawn,
    wait_until_caught_up,
)
from tests.integration.support import eventually
from tests.integration.test_api import SECRET, bearer, serve, settings_for, token
from tests.integration.test_replay import ok, replay

pytestmark = pytest.mark.integration

JOBS = 60  # about 20 per primary: none of the three is left without jobs


@dataclass
class Projected:
    """Two versions projected into the cluster by two running projectors."""

    topic: str
    active: str
    other: str
    events: list[JobEvent]
    records: int  # on the topic, duplicates included
    projectors: dict[str, LocalProcess]

    def env(self, bootstrap: str, redis_url: str) -> dict[str, str]:
        return projector_env(bootstrap, self.topic, redis_url, self.active)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    started = start_redis_cluster(Path(tmp_path_factory.mktemp("cluster")))
    yield started
    started.stop()


@pytest.fixture(scope="module")
async def cluster_redis(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def nodes(cluster: LocalCluster) -> AsyncIterator[dict[int, Redis]]:
    """A plain client per node (by port): what one node holds, not what the cluster routes."""
    clients = {node.port: Redis(port=node.port) for node in cluster.nodes}
    yield clients
    for client in clients.values():
        await client.aclose()


@pytest.fixture(scope="module")
async def projected(
    kafka_bootstrap: str,
    cluster: LocalCluster,
    cluster_redis: RedisCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Projected]:
    name = uuid.uuid4().hex[:10]
    topic = f"jobs.events.cluster.{name}"
    await create_topics(kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    events = job_events(jobs=JOBS)
    delivery = shuffled_with_duplicates(events)
    await produce(kafka_bootstrap, topic, delivery)
    workdir = Path(tmp_path_factory.mktemp("cluster-projectors"))
    active, other = f"a{name}", f"b{name}"
    projectors = {
        version: spawn(
            projector_env(kafka_bootstrap, topic, cluster.url, version),
            workdir,
            f"projector-{version}",
        )
        for version in (active, other)
    }
    try:
        found = Projected(topic, active, other, events, len(delivery), projectors)
        await caught_up(kafka_bootstrap, found, cluster)
        await cluster_redis.set(ACTIVE_VERSION_KEY, active)
        yield found
    finally:
        for process in projectors.values():
            process.stop()


async def caught_up(bootstrap: str, projected: Projected, cluster: LocalCluster) -> None:
    """Until both projectors' groups have committed every record (with their logs if not)."""
    try:
        for version in (projected.active, projected.other):
            await wait_until_caught_up(bootstrap, projected.topic, version, projected.records)
    except AssertionError as error:
        logs = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in projected.projectors.values())
        raise AssertionError(f"{error}\n{logs}\n{cluster.log_tail()}") from None


async def stored_state(redis: RedisCluster, version: str, ref: JobRef) -> JobState:
    raw: Any = await redis.hgetall(job_key(version, *ref))
    return decode_state({k.decode(): v.decode() for k, v in raw.items()})


async def keys_per_node(nodes: dict[int, Redis], version: str) -> dict[int, set[str]]:
    return {
        port: {key.decode() async for key in client.scan_iter(match=job_key_pattern(version))}
        for port, client in nodes.items()
    }


def owner_port(redis: RedisCluster, key: str) -> int:
    node = redis.get_node_from_key(key)
    assert node is not None, f"no node owns the slot of {key}"
    return int(node.port)


def public_seq(state: JobState) -> int:
    return 0 if state.public is None else state.public.seq


def top_seq(events: list[JobEvent], ref: JobRef) -> int:
    return max(e.seq for e in events if (e.tenant_id, e.job_id) == ref)


# --- the projection ------------------------------------------------------------------------


async def test_the_projector_folds_shuffled_duplicated_events_into_the_cluster(
    kafka_bootstrap: str,
    cluster: LocalCluster,
    cluster_redis: RedisCluster,
    projected: Projected,
) -> None:
    await caught_up(kafka_bootstrap, projected, cluster)
    expected = expected_states(projected.events)
    for version in (projected.active, projected.other):
        for ref, state in expected.items():
            assert await stored_state(cluster_redis, version, ref) == state, (version, ref)
        # SCAN through the cluster client visits every primary.
        keys = [k async for k in cluster_redis.scan_iter(match=job_key_pattern(version))]
        assert len(keys) == len(expected), "no job beyond the events' jobs is stored"


async def test_the_merge_function_is_loaded_on_every_primary(
    nodes: dict[int, Redis], projected: Projected
) -> None:
    for port, client in nodes.items():
        libraries: Any = await client.function_list(library=MERGE_LIBRARY)
        assert MERGE_FUNCTION.encode() in flatten(libraries), f"node {port}: {libraries}"


def flatten(reply: Any) -> list[Any]:
    if isinstance(reply, list | tuple):
        return [item for part in reply for item in flatten(part)]
    if isinstance(reply, dict):
        return flatten(list(reply.items()))
    return [reply]


async def test_each_job_lives_in_one_slot_and_jobs_are_spread_over_every_primary(
    cluster_redis: RedisCluster, nodes: dict[int, Redis], projected: Projected
) -> None:
    version = projected.active
    held = await keys_per_node(nodes, version)
    expected = {job_key(version, *ref) for ref in expected_states(projected.events)}
    assert all(held.values()), {port: len(keys) for port, keys in held.items()}
    assert sorted(k for keys in held.values() for k in keys) == sorted(expected)
    for port, keys in held.items():
        for key in keys:
            assert owner_port(cluster_redis, key) == port, f"{key} on {port}"
            # The job's change channel shares its hash tag: same slot, same node.
            _, _, tagged = key.split(":", 2)
            tenant, job_id = tagged[1:-1].split(":")
            channel = change_channel(version, tenant, job_id)
            assert key_slot(channel.encode()) == key_slot(key.encode())


# --- the api -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(
    stack: Stack,
    cluster: LocalCluster,
    projected: Projected,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The real api process with `REDIS_URL` naming one node (not the first: any node does)."""
    env = {**stack.env(), "REDIS_URL": cluster.node_urls[-1], "JWT_SECRET": SECRET}
    process = start_api(env, Path(tmp_path_factory.mktemp("cluster-api")))
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def one_job_per_node(redis: RedisCluster, projected: Projected) -> dict[int, JobRef]:
    jobs: dict[int, JobRef] = {}
    for ref in sorted(expected_states(projected.events)):
        jobs.setdefault(owner_port(redis, job_key(projected.active, *ref)), ref)
    assert len(jobs) == 3, jobs
    return jobs


async def test_the_api_serves_jobs_from_every_node_and_hides_other_tenants(
    api: str, cluster_redis: RedisCluster, projected: Projected
) -> None:
    expected = expected_states(projected.events)
    async with httpx.AsyncClient(base_url=api, timeout=10) as http:
        for ref in one_job_per_node(cluster_redis, projected).values():
            tenant, job_id = ref
            state = expected[ref]
            assert state.head is not None
            assert state.origin is not None
            for query in ("", "?after_seq=0"):  # the fast path, and FastAPI's route
                response = await http.get(
                    f"/v1/jobs/{job_id}{query}", headers=bearer(token(tenant))
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert (body["id"], body["status"], body["type"]) == (
                    job_id,
                    state.head.status,
                    state.origin.job_type,
                )
                latest = body["latest_event"]
                assert (latest and latest["seq"]) == (state.public and state.public.seq)
            stranger = "globex" if tenant == "acme" else "acme"
            hidden = await http.get(f"/v1/jobs/{job_id}", headers=bearer(token(stranger)))
            assert hidden.status_code == 404
            assert hidden.json()["detail"]["code"] == "JOB_NOT_FOUND"


async def test_long_polls_on_every_node_wake_when_their_job_changes(
    api: str,
    kafka_bootstrap: str,
    cluster_redis: RedisCluster,
    nodes: dict[int, Redis],
    projected: Projected,
) -> None:
    jobs = one_job_per_node(cluster_redis, projected)
    expected = expected_states(projected.events)
    version = projected.active

    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        polls = {
            ref: asyncio.create_task(
                http.get(
                    f"/v1/jobs/{ref[1]}",
                    params={"wait": 20, "after_seq": public_seq(expected[ref])},
                    headers=bearer(token(ref[0])),
                )
            )
            for ref in jobs.values()
        }

        async def all_subscribed() -> bool:
            for port, ref in jobs.items():
                channel = change_channel(version, *ref)
                counts: Any = await nodes[port].pubsub_shardnumsub(channel)
                if dict(counts).get(channel.encode(), 0) < 1:
                    return False
            return True

        await eventually(all_subscribed, 15, "the api subscribing on each job's node")
        # Not a synchronisation (the polls pass without it): past the api's wait for the
        # subscription's confirmation, so that a change can only reach a poll as a
        # notification, never through the poll's re-read after subscribing.
        await asyncio.sleep(SUBSCRIBE_CONFIRM_SECONDS)
        changes = [
            event(
                job_id=job_id,
                tenant_id=tenant,
                seq=top_seq(projected.events, (tenant, job_id)) + 1,
                kind="stage",
                message="moved on",
            )
            for tenant, job_id in jobs.values()
        ]
        produced_at = time.monotonic()
        await produce(kafka_bootstrap, projected.topic, changes)
        projected.events += changes
        projected.records += len(changes)
        answers = await asyncio.gather(*polls.values())
        elapsed = time.monotonic() - produced_at

    for answer, change in zip(answers, changes, strict=True):
        assert answer.status_code == 200, answer.text
        latest = answer.json()["latest_event"]
        assert (latest["seq"], latest["message"]) == (change.seq, "moved on")
    assert elapsed < 10, f"woken by the change, not by the 20 s deadline ({elapsed:.1f} s)"


async def test_the_api_answers_503_when_no_node_of_its_cluster_answers(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    access_key, secret_key = stack.s3_credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    doomed = start_redis_cluster(tmp_path)
    try:
        job = f"/v1/jobs/{ulid()}"
        async for client in serve(create_app(settings_for(stack, doomed.url))):
            assert (await client.get(job, headers=bearer(token()))).status_code == 404
            doomed.stop()
            for query in ("", "?after_seq=0"):  # the fast path, and FastAPI's route
                response = await client.get(job + query, headers=bearer(token()))
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"]
                assert response.json()["detail"]["code"] == "UNAVAILABLE"
    finally:
        doomed.stop()


# --- the replay tools ----------------------------------------------------------------------


async def test_replay_verify_and_drop_work_across_the_nodes(
    kafka_bootstrap: str,
    cluster: LocalCluster,
    cluster_redis: RedisCluster,
    nodes: dict[int, Redis],
    projected: Projected,
) -> None:
    await caught_up(kafka_bootstrap, projected, cluster)
    env = projected.env(kafka_bootstrap, cluster.url)
    verdict = ok(
        await asyncio.to_thread(
            replay, env, "verify", "--from", projected.active, "--to", projected.other
        )
    )
    assert f"{JOBS} jobs compared: {JOBS} equal, 0 differing, 0 in flight" in verdict
    assert f"{projected.active} and {projected.other} are equal" in verdict
    for port, client in nodes.items():
        libraries: Any = await client.function_list(library=DIGEST_LIBRARY)
        assert libraries, f"the digest function is missing on node {port}"

    before = await keys_per_node(nodes, projected.other)
    assert all(before.values()), "the dropped version had keys on every node"
    kept = await keys_per_node(nodes, projected.active)
    projected.projectors[projected.other].stop()
    dropped = ok(await asyncio.to_thread(replay, env, "drop", projected.other, "--yes"))

    assert f"{sum(len(keys) for keys in before.values())} keys removed" in dropped
    assert await keys_per_node(nodes, projected.other) == {port: set() for port in nodes}
    assert await keys_per_node(nodes, projected.active) == kept
    assert await cluster_redis.get(ACTIVE_VERSION_KEY) == projected.active.encode()
