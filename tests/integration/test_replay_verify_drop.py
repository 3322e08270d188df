"""`replay verify` and `replay drop` on real parts: versions built by real projectors, and
versions written straight through the store's merge (thousands of jobs in milliseconds)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from contracts.job_state import (
    ACTIVE_VERSION_KEY,
    F_HEAD,
    F_PUBLIC,
    PREVIOUS_VERSION_KEY,
    JobState,
    Status,
    head_value,
    job_key,
    job_key_pattern,
    public_value,
)
from devstack import create_topics
from devstack.data import BUCKETS, event
from devstack.services import REPO
from projector.fold import JobRef
from projector.replay import drop, verify
from projector.replay import topic as topic_info
from projector.settings import ProjectorSettings
from projector.store import ProjectionStore
from tests.integration.projection import (
    expected_states,
    job_events,
    produce,
    projector_env,
    shuffled_with_duplicates,
    spawn,
    stored_state,
    wait_until_caught_up,
)
from tests.integration.test_api import db_url

pytestmark = pytest.mark.integration

VERIFY_DB = 6  # a database of its own: `projection:active` and `:previous` are per database
PARTITIONS = 4


@dataclass(frozen=True)
class Built:
    """Two versions projected by real projectors from one topic, both caught up."""

    topic: str
    redis_url: str
    source: str
    target: str
    states: dict[JobRef, JobState]


@pytest.fixture(scope="module")
async def verify_url(redis_url: str) -> AsyncIterator[str]:
    """The database of this module's tests, emptied when they are done."""
    url = db_url(redis_url, VERIFY_DB)
    yield url
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="module")
async def built(
    kafka_bootstrap: str, verify_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    name = uuid.uuid4().hex[:10]
    topic = f"jobs.events.verify.{name}"
    await create_topics(kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    events = job_events(jobs=80)
    delivery = shuffled_with_duplicates(events)
    await produce(kafka_bootstrap, topic, delivery)
    workdir = tmp_path_factory.mktemp("verify")
    source, target = f"a{name}", f"b{name}"
    started = [
        spawn(projector_env(kafka_bootstrap, topic, verify_url, v), workdir, f"projector-{v}")
        for v in (source, target)
    ]
    try:
        for version in (source, target):
            await wait_until_caught_up(kafka_bootstrap, topic, version, len(delivery))
    finally:
        for process in started:
            process.stop()
    return Built(topic, verify_url, source, target, expected_states(events))


@pytest.fixture
async def db(verify_url: str) -> AsyncIterator[Redis]:
    """The test database; the active and previous version are unset again afterwards."""
    client = Redis.from_url(verify_url)
    yield client
    await client.delete(ACTIVE_VERSION_KEY, PREVIOUS_VERSION_KEY)
    await client.aclose()


def settings_for(bootstrap: str, redis_url: str, topic: str) -> ProjectorSettings:
    return ProjectorSettings(
        kafka_bootstrap_servers=bootstrap,
        redis_url=redis_url,
        kafka_topic=topic,
        kafka_group_id="jobs-projector",
        artifact_buckets=",".join(BUCKETS),
    )


@pytest.fixture
def settings(kafka_bootstrap: str, verify_url: str, topic: str) -> ProjectorSettings:
    """Settings on a fresh, empty topic: no group lags, so no job is in flight."""
    return settings_for(kafka_bootstrap, verify_url, topic)


async def run_verify(
    settings: ProjectorSettings,
    source: str,
    target: str,
    tenant: str | None = None,
    sample: int | None = None,
) -> int:
    args = argparse.Namespace(source=source, target=target, tenant=tenant, sample=sample)
    return await verify.command(settings, args)


async def run_drop(settings: ProjectorSettings, version: str) -> int:
    return await drop.command(settings, argparse.Namespace(version=version, force=False, yes=True))


async def write_versions(
    redis: Redis, states: dict[JobRef, JobState], *names: str
) -> dict[JobRef, JobState]:
    for name in names:
        await ProjectionStore(redis, name).merge(states)
    return states


def states_of(jobs: int, tenants: tuple[str, ...] = ("acme", "globex")) -> dict[JobRef, JobState]:
    return expected_states(job_events(jobs, tenants))


def summary(out: str) -> str:
    return next(line for line in out.splitlines() if " jobs compared: " in line)


def differs_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("DIFFERS ")]


async def keys_of(redis: Redis, version: str) -> int:
    return len([key async for key in redis.scan_iter(match=job_key_pattern(version), count=1000)])


async def test_two_versions_built_by_real_projectors_from_one_topic_are_equal(
    kafka_bootstrap: str, built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(kafka_bootstrap, built.redis_url, built.topic)

    code = await run_verify(settings, built.source, built.target)

    out = capsys.readouterr().out
    jobs = len(built.states)
    assert code == 0, out
    assert f"{jobs} jobs compared: {jobs} equal, 0 differing, 0 in flight" in summary(out)
    assert f"{built.source} and {built.target} are equal" in out


async def test_a_job_deleted_by_hand_is_named_missing_on_its_side(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(40), source, target)
    (tenant_a, gone_from_a), (tenant_b, gone_from_b) = list(states)[3], list(states)[17]
    await db.delete(job_key(source, tenant_a, gone_from_a), job_key(target, tenant_b, gone_from_b))

    code = await run_verify(settings, source, target)

    out = capsys.readouterr().out
    assert code == 1, out
    assert sorted(differs_lines(out)) == sorted(
        [
            f"DIFFERS tenant={tenant_a} id={gone_from_a}: missing in A ({source})",
            f"DIFFERS tenant={tenant_b} id={gone_from_b}: missing in B ({target})",
        ]
    )
    assert "40 jobs compared: 38 equal, 2 differing, 0 in flight" in summary(out)
    assert "(1 missing in A, 1 missing in B)" in summary(out)
    assert f"{source} and {target} differ: 2 jobs" in out


async def test_a_field_changed_by_hand_is_shown_field_by_field(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(20), source, target)
    ref = next(ref for ref, state in states.items() if state.public is not None)
    head, public = states[ref].head, states[ref].public
    assert head is not None
    assert public is not None
    status: Status = "FAILED" if head.status != "FAILED" else "QUEUED"
    stored_event = json.loads(public.event_json)  # [kind, message, artifacts, payload, at]
    stored_event[1] = "changed by hand"
    edited = public._replace(event_json=json.dumps(stored_event, separators=(",", ":")))
    await db.hset(
        job_key(target, *ref),
        mapping={
            F_HEAD: head_value(*head._replace(status=status)),
            F_PUBLIC: public_value(*edited),
        },
    )

    code = await run_verify(settings, source, target)

    out = capsys.readouterr().out
    assert code == 1, out
    assert differs_lines(out) == [f"DIFFERS tenant={ref[0]} id={ref[1]}: fields differ"]
    assert f"    head.status: {source}={head.status} {target}={status}" in out
    message = json.loads(public.event_json)[1]
    assert f"    public.message: {source}={message} {target}=changed by hand\n" in out
    assert "head.manifest_json" not in out
    assert "origin." not in out


async def test_tenant_restricts_both_passes(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(30), source, target)
    globex = [ref for ref in states if ref[0] == "globex"]
    await db.delete(job_key(source, *globex[0]), job_key(target, *globex[1]))
    acme_jobs = len(states) - len(globex)

    assert await run_verify(settings, source, target, tenant="acme") == 0
    out = capsys.readouterr().out
    assert f"{acme_jobs} jobs compared: {acme_jobs} equal, 0 differing" in summary(out)

    assert await run_verify(settings, source, target, tenant="globex") == 1
    out = capsys.readouterr().out
    assert f"{len(globex)} jobs compared: {len(globex) - 2} equal, 2 differing" in summary(out)
    assert {line.split()[1] for line in differs_lines(out)} == {"tenant=globex"}


async def test_differences_on_a_lagging_partition_are_in_flight_not_failures(
    settings: ProjectorSettings,
    db: Redis,
    version: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(40), source, target)
    by_partition: dict[int, JobRef] = {}
    for ref in states:
        by_partition.setdefault(topic_info.partition_for_key(ref[1].encode(), PARTITIONS), ref)
    (lagging, in_flight), (_, settled) = list(by_partition.items())[:2]
    # One event on the topic that neither version's group has consumed: that partition lags.
    arriving = event(job_id=in_flight[1], tenant_id=in_flight[0], seq=9, kind="stage")
    await produce(settings.kafka_bootstrap_servers, settings.kafka_topic, [arriving])
    await db.delete(job_key(target, *in_flight), job_key(target, *settled))

    assert await run_verify(settings, source, target) == 1
    out = capsys.readouterr().out
    assert f"IN FLIGHT tenant={in_flight[0]} id={in_flight[1]} partition={lagging}" in out
    assert differs_lines(out) == [
        f"DIFFERS tenant={settled[0]} id={settled[1]}: missing in B ({target})"
    ]
    assert "1 differing, 1 in flight" in summary(out)

    await ProjectionStore(db, target).merge({settled: states[settled]})
    assert await run_verify(settings, source, target) == 0
    out = capsys.readouterr().out
    assert "are equal, apart from 1 jobs in flight" in out


async def test_verify_refuses_a_tenant_that_is_no_tenant_id_and_a_missing_topic(
    kafka_bootstrap: str, verify_url: str, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(kafka_bootstrap, verify_url, f"jobs.events.none.{version}")

    assert await run_verify(settings, "v1", "v2", tenant="acme*") == 2
    assert await run_verify(settings, "v1", "v2") == 2

    err = capsys.readouterr().err
    assert "--tenant 'acme*': not a tenant id" in err
    assert f"KAFKA_TOPIC: topic 'jobs.events.none.{version}' not found" in err


async def test_a_sample_compares_about_n_jobs(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"{version}a", f"{version}b"
    await write_versions(db, states_of(1500), source, target)
    await ProjectionStore(db, source).merge(states_of(1, ("initech",)))  # not in B

    assert await run_verify(settings, source, target, sample=100) in (0, 1)
    out = capsys.readouterr().out
    assert summary(out).startswith("100 jobs compared: "), out  # B has no job A lacks

    # A sample as large as A holds every job: the one B lacks is found.
    assert await run_verify(settings, source, target, sample=2000) == 1
    out = capsys.readouterr().out
    assert summary(out).startswith("1,501 jobs compared: 1,500 equal, 1 differing"), out
    assert differs_lines(out)[0].startswith("DIFFERS tenant=initech ")


async def test_thousands_of_jobs_are_verified_and_dropped(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(3000), source, target)
    changed = [ref for ref, state in states.items() if state.head is not None][:60]
    pipe = db.pipeline(transaction=False)
    for ref in changed:
        head = states[ref].head
        assert head is not None
        pipe.hset(job_key(target, *ref), F_HEAD, head_value(*head._replace(seq=head.seq + 1)))
    await pipe.execute()

    assert await run_verify(settings, source, target) == 1
    out = capsys.readouterr().out
    assert {line.split()[2] for line in differs_lines(out)} == {f"id={job}:" for _, job in changed}
    assert out.count("    head.seq: ") == verify.MAX_DETAILS
    assert "... and 10 more jobs with differing fields, listed without their diff" in out
    assert "3,000 jobs compared: 2,940 equal, 60 differing" in summary(out)

    assert await run_drop(settings, target) == 0
    out = capsys.readouterr().out
    assert f"dropped {target}: 3,000 keys removed" in out
    assert await keys_of(db, target) == 0
    assert await keys_of(db, source) == 3000


async def test_drop_refuses_the_active_version(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_versions(db, states_of(10), version)

    assert await run_drop(settings, "v1") == 1  # no projection:active: v1 is the active one
    await db.set(ACTIVE_VERSION_KEY, version)
    assert await run_drop(settings, version) == 1

    out = capsys.readouterr().out
    assert out.splitlines() == [
        "refused: v1 is the active version; promote another one first",
        f"refused: {version} is the active version; promote another one first",
    ]
    assert await keys_of(db, version) == 10


async def test_drop_removes_only_its_version_and_forgets_it_as_previous(
    settings: ProjectorSettings, db: Redis, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    longer = f"{version}x"  # its keys start with the dropped version's name
    states = await write_versions(db, states_of(1200), version, longer, "v1")
    await db.set(ACTIVE_VERSION_KEY, "v1")
    await db.set(PREVIOUS_VERSION_KEY, version)

    assert await run_drop(settings, version) == 0
    out = capsys.readouterr().out
    assert f"dropped {version}: {len(states):,} keys removed" in out
    assert f"deleted {PREVIOUS_VERSION_KEY} (it named {version})" in out
    assert await keys_of(db, version) == 0
    assert await keys_of(db, longer) == len(states)
    assert await db.get(PREVIOUS_VERSION_KEY) is None
    ref = next(iter(states))
    assert await stored_state(db, longer, ref) == states[ref]

    assert await run_drop(settings, version) == 0
    assert capsys.readouterr().out.strip() == f"nothing to drop: no key matches job:{version}:*"
    await db.delete(*[job_key("v1", *ref) for ref in states])


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "projector", "replay", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_verify_and_drop_through_the_command_line(
    kafka_bootstrap: str, topic: str, verify_url: str, db: Redis, version: str
) -> None:
    source, target = f"{version}a", f"{version}b"
    states = await write_versions(db, states_of(50), source, target)
    tenant, job_id = list(states)[7]
    await db.delete(job_key(target, tenant, job_id))
    env = projector_env(kafka_bootstrap, topic, verify_url, source)

    different = replay(env, "verify", "--from", source, "--to", target)
    assert different.returncode == 1, different.stderr
    assert f"DIFFERS tenant={tenant} id={job_id}: missing in B ({target})" in different.stdout
    assert f"{source} vs {target}: 50 jobs" in different.stderr  # the progress row
    equal = replay(env, "verify", "--from", source, "--to", target, "--tenant", "nobody")
    assert equal.returncode == 0, equal.stdout + equal.stderr
    assert "0 jobs compared" in equal.stdout

    dropped = replay(env, "drop", target, "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert f"dropped {target}: 49 keys removed" in dropped.stdout
    assert await keys_of(db, target) == 0
