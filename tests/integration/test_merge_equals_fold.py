"""The Redis merge (`projector/jobs.lua`) is the fold (`projector/fold.py`): the same random
event sets, delivered to a real `redis-server` in random batches and orders, end as the fold
of the distinct events. Same-seq conflicts and twins (the same seq and event_id, different
content) are part of every draw."""

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
from contracts.job_state import decode_state, job_key, split_groups
from projector.event_fields import fields_of
from projector.fold import BatchFold, fold
from projector.redis_client import connect_redis
from projector.store import ProjectionStore, load_functions
from tests.strategies import event_sets

T = TypeVar("T")
TENANT = "acme"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On a loop of its own: hypothesis calls the test synchronously, once per example."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def merged_in_redis(redis_url: str, batches: list[list[JobEvent]]) -> dict[str, str]:
    """Each batch folded by `BatchFold` and merged by the Lua merge, one after the other, into
    a version of its own; the job's stored hash. Each change's announcement is checked on the
    way: the job's groups as the merge left them, which the api's near cache keeps."""
    version = f"prop{uuid.uuid4().hex[:8]}"
    job_id = batches[0][0].job_id
    key = job_key(version, TENANT, job_id)
    client = await connect_redis(redis_url)
    pubsub: Any = client.pubsub()
    try:
        await load_functions(client)
        await pubsub.ssubscribe(key)
        store = ProjectionStore(client, version)
        for batch in batches:
            fold_ = BatchFold()
            for event in batch:
                fold_.add(fields_of(event))
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
    cuts = sorted(data.draw(st.sets(st.integers(1, len(events) - 1))) if len(events) > 1 else [])
    bounds = [0, *cuts, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_state(run(merged_in_redis(redis_url, batches))) == fold(events)


def test_the_lua_merge_keeps_the_stored_job_when_a_delivery_changes_nothing(
    redis_url: str,
) -> None:
    """A redelivery is answered with 0 groups written: the projector counts it a duplicate."""
    from devstack.data import event

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
