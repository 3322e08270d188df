"""The Redis merge (`projector/jobs.lua`) is the fold (`projector/fold.py`): the same random
event sets, delivered to a real `redis-server` in random batches and orders, end as the fold
of the distinct events, stored as the codec encodes it (`encode_state`). Same-seq conflicts
are part of every draw, twins (the same seq and event_id, different content) of the draws
around a succeeded event whose artifacts the head and the public group share."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from contracts.events import JobEvent
from contracts.job_state import (
    F_PUBLIC,
    UNIT,
    decode_state,
    encode_state,
    job_key,
    split_groups,
)
from devstack.data import event, event_dict
from projector.event_fields import fields_of
from projector.fold import BatchFold, fold
from projector.redis_client import connect_redis
from projector.store import ProjectionStore, load_functions
from tests.strategies import (
    KINDS,
    VISIBILITIES,
    artifact_documents,
    event_from_document,
    event_sets,
    ulids,
)

T = TypeVar("T")
TENANT = "acme"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On a loop of its own: hypothesis calls the test synchronously, once per example."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def merged_in_redis(
    redis_url: str, batches: list[list[JobEvent]], stored: dict[str, str] | None = None
) -> dict[str, str]:
    """Each batch folded by `BatchFold` and merged by the Lua merge, one after the other, into
    a version of its own (holding the hash `stored` first, when given); the job's stored hash.
    Each change's announcement is checked on the way: the job's groups as the merge left them,
    which the api's near cache keeps."""
    version = f"prop{uuid.uuid4().hex[:8]}"
    job_id = batches[0][0].job_id
    key = job_key(version, TENANT, job_id)
    client = await connect_redis(redis_url)
    pubsub: Any = client.pubsub()
    try:
        await load_functions(client)
        await pubsub.ssubscribe(key)
        if stored:
            await client.hset(key, mapping=stored)  # type: ignore[arg-type]
        store = ProjectionStore(client, version)
        for batch in batches:
            fold_ = BatchFold()
            for one in batch:
                fold_.add(fields_of(one))
            written = await store.merge_packed(*fold_.packed())
            raw: Any = await client.hgetall(key)
            await client.spublish(key, b"end of batch")  # behind the merge's, if any
            announced = [message async for message in _announcements(pubsub)]
            assert announced == ([raw] if written[0] else []), (announced, raw)
        await client.delete(key)
    finally:
        await pubsub.aclose()
        await client.aclose()
    return {name.decode(): value.decode() for name, value in raw.items()}


async def _announcements(pubsub: Any) -> Any:
    """The job states announced up to the "end of batch" marker."""
    while True:
        message = await pubsub.get_message(timeout=5)
        assert message is not None, "no end-of-batch marker within 5 s"
        if message["type"] != "smessage":
            continue
        if message["data"] == b"end of batch":
            return
        yield split_groups(message["data"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_sets(tenant_id=TENANT, min_size=1, max_size=10, max_seq=5), data=st.data())
def test_the_lua_merge_of_any_batches_equals_the_fold(
    redis_url: str, events: list[JobEvent], data: st.DataObject
) -> None:
    # Cut the delivery into batches at random points: one event per batch, all in one, or
    # anything between; each batch is folded in Python first, as the projector does.
    assert_merged_as_folded(redis_url, events, data)


def assert_merged_as_folded(redis_url: str, events: list[JobEvent], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, len(events) - 1))) if len(events) > 1 else [])
    bounds = [0, *cuts, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]
    stored = run(merged_in_redis(redis_url, batches))
    assert stored == encode_state(fold(events))
    assert decode_state(stored) == fold(events)


# --- a succeeded event's artifacts, stored once ----------------------------------------------

SUCCEEDED_SEQ = 3


@st.composite
def around_a_shared_manifest(draw: st.DrawFn) -> list[JobEvent]:
    """A succeeded event with artifacts (when public, its head's manifest and its public value
    share them), other events before and after it (replacing its head, its public group, or
    both), up to two twins of it (its seq and event_id; the same artifacts or others, another
    kind or visibility: a head and a public group of the same tag from different events),
    redeliveries, in any order."""
    artifacts = draw(st.lists(artifact_documents(), min_size=1, max_size=2))
    succeeded_id = draw(ulids())
    succeeded = event_dict(
        seq=SUCCEEDED_SEQ,
        kind="succeeded",
        visibility=draw(st.sampled_from(VISIBILITIES)),
        event_id=succeeded_id,
        artifacts=artifacts,
        message=draw(st.sampled_from(["done", "e"])),
    )
    documents = [succeeded]
    for _ in range(draw(st.integers(0, 3))):
        documents.append(
            event_dict(
                seq=draw(st.integers(1, SUCCEEDED_SEQ + 2)),
                kind=draw(st.sampled_from(KINDS)),
                visibility=draw(st.sampled_from(VISIBILITIES)),
                event_id=draw(ulids()),
                artifacts=draw(st.sampled_from([[], artifacts])),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        twin = event_dict(
            seq=SUCCEEDED_SEQ,
            kind=draw(st.sampled_from(KINDS)),
            visibility=draw(st.sampled_from(VISIBILITIES)),
            event_id=succeeded_id,
            artifacts=draw(
                st.one_of(st.just(artifacts), st.lists(artifact_documents(), max_size=2))
            ),
            message=draw(st.sampled_from(["done", "e"])),
        )
        documents.append(twin)
    documents += draw(st.lists(st.sampled_from(documents), max_size=2))
    return [event_from_document(one) for one in draw(st.permutations(documents))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=around_a_shared_manifest(), data=st.data())
def test_the_lua_merge_around_shared_artifacts_equals_the_fold(
    redis_url: str, events: list[JobEvent], data: st.DataObject
) -> None:
    assert_merged_as_folded(redis_url, events, data)


ART = {"bucket": "renders", "key": "tenant/look.png", "kind": "on_model_render", "role": "final"}
SUCCEEDED = event(seq=2, kind="succeeded", artifacts=[ART], message="done")


def every_delivery(events: list[JobEvent]) -> list[list[list[JobEvent]]]:
    """Every order of `events`, cut into batches in every way."""
    deliveries = []
    for order in itertools.permutations(events):
        for cuts in itertools.product([False, True], repeat=len(events) - 1):
            batches, batch = [], [order[0]]
            for one, cut in zip(order[1:], cuts, strict=True):
                if cut:
                    batches.append(batch)
                    batch = []
                batch.append(one)
            deliveries.append([*batches, batch])
    return deliveries


def stored_public(redis_url: str, events: list[JobEvent]) -> str:
    """The job's public value after every delivery of `events` (all alike), checked to be the
    codec's encoding of the fold."""
    expected = encode_state(fold(events))
    for batches in every_delivery(events):
        assert run(merged_in_redis(redis_url, batches)) == expected, batches
    return expected[F_PUBLIC]


def test_a_succeeded_events_artifacts_are_stored_once(redis_url: str) -> None:
    public = stored_public(redis_url, [event(seq=1), SUCCEEDED])
    assert ART["key"] not in public
    assert f"{UNIT}{UNIT}" in public, "the public value refers to the head's manifest"


def test_a_later_head_gives_the_public_value_its_artifacts_back(redis_url: str) -> None:
    """The succeeded event stays the latest public event, but no longer is the head."""
    later = event(seq=3, kind="stage", visibility="internal")
    assert ART["key"] in stored_public(redis_url, [event(seq=1), SUCCEEDED, later])
    created_later = event(seq=4, kind="created", visibility="public")
    assert ART["key"] in stored_public(redis_url, [SUCCEEDED, created_later])


def test_a_later_public_event_replaces_a_public_value_that_shared_the_manifest(
    redis_url: str,
) -> None:
    later = event(seq=3, kind="failed", message="undone")
    assert ART["key"] not in stored_public(redis_url, [SUCCEEDED, later])


def test_a_twin_that_wins_the_head_alone_takes_the_shared_artifacts_from_it(
    redis_url: str,
) -> None:
    """Twins: the same seq and event_id. A head of the twin's (SUCCEEDED with other artifacts
    ranks above) under the public value of the first one, and the reverse."""
    other = {**ART, "key": "tenant/zz-other.png"}
    twin = event(
        seq=2,
        kind="succeeded",
        visibility="internal",
        event_id=SUCCEEDED.event_id,
        artifacts=[other],
    )
    public = stored_public(redis_url, [SUCCEEDED, twin])
    assert ART["key"] in public
    assert other["key"] not in public


def test_a_twins_public_value_shares_its_artifacts_with_the_other_twins_head(
    redis_url: str,
) -> None:
    """The head of an internal succeeded event and the public value of its twin, a public
    failed event with the same artifacts: one tag, one list of artifacts, stored once whichever
    of them Redis held first."""
    internal = event(seq=2, kind="succeeded", visibility="internal", artifacts=[ART])
    twin = event(seq=2, kind="failed", event_id=internal.event_id, artifacts=[ART])
    public = stored_public(redis_url, [internal, twin])
    assert ART["key"] not in public


def test_a_public_value_of_the_earlier_layout_is_merged_into(redis_url: str) -> None:
    """Hashes written before the artifacts were shared keep the public event whole; a merge
    keeps it readable and replaces it as any other."""
    created = event(seq=1)
    state = fold([created, SUCCEEDED])
    assert state.public is not None
    seq, event_id, event_json = state.public
    earlier = encode_state(state) | {F_PUBLIC: f"{seq}{UNIT}{event_id}{UNIT}{event_json}"}
    internal = event(seq=3, kind="stage", visibility="internal")
    merged = run(merged_in_redis(redis_url, [[internal]], stored=earlier))
    assert decode_state(merged) == fold([created, SUCCEEDED, internal])
    failed = event(seq=4, kind="failed")
    replaced = run(merged_in_redis(redis_url, [[failed]], stored=earlier))
    assert replaced == encode_state(fold([created, SUCCEEDED, failed]))


def test_the_lua_merge_keeps_the_stored_job_when_a_delivery_changes_nothing(
    redis_url: str,
) -> None:
    """A redelivery is answered with 0 groups written: the projector counts it a duplicate."""

    async def written_twice() -> tuple[list[int], list[int]]:
        client: Redis = await connect_redis(redis_url)  # type: ignore[assignment]
        try:
            await load_functions(client)
            store = ProjectionStore(client, f"prop{uuid.uuid4().hex[:8]}")
            once = BatchFold()
            once.add(fields_of(event(seq=3, kind="stage")))
            first = await store.merge_packed(*once.packed())
            again = await store.merge_packed(*once.packed())
        finally:
            await client.aclose()
        return first, again

    first, again = run(written_twice())
    assert first == [3]
    assert again == [0]
