"""The api's near cache against a real redis-server: writes (the projector's merge) race
reads (the api's reader), and a read that starts after the api was told of a change never
answers the state before it - also while the change subscriber's connection is killed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from api.near_cache import NearCache
from api.notifier import ChangeNotifier
from api.reader import JobReader
from api.redis_client import LazyRedis
from contracts.job_state import DEFAULT_VERSION, F_PUBLIC, change_channel, stored_seq
from devstack.data import event, ulid
from devstack.processes import LocalProcess
from projector.event_fields import fields_of
from projector.fold import BatchFold
from projector.redis_client import connect_redis
from projector.store import ProjectionStore, load_functions

TENANT = "acme"
_PUBLIC = F_PUBLIC.encode()


class WatchedCache(NearCache):
    """Notes the greatest public seq the api was told of, and when."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told = 0

    def changed(self, key: str, fields: dict[bytes, bytes] | None) -> None:
        if fields is not None and key in self._channels:
            self.told = max(self.told, stored_seq(fields.get(_PUBLIC)))
        super().changed(key, fields)


@dataclass
class Sides:
    """The projector's store writing, and the api's notifier, near cache and reader."""

    store: ProjectionStore
    notifier: ChangeNotifier
    cache: WatchedCache
    reader: JobReader
    round_trips: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def both_sides(redis_port: int) -> AsyncIterator[Sides]:
    url = f"redis://127.0.0.1:{redis_port}/0"
    writer_client = await connect_redis(url)
    redis = LazyRedis(url)
    notifier = ChangeNotifier(redis)
    try:
        await load_functions(writer_client)
        cache = notifier.cache = WatchedCache(
            1 << 20, max_age=30.0, keep=notifier.keep, release=notifier.release
        )
        round_trips: list[float] = []
        reader = JobReader(redis, cache=cache, observe_read=round_trips.append)
        store = ProjectionStore(writer_client, DEFAULT_VERSION)
        yield Sides(store, notifier, cache, reader, round_trips)
    finally:
        await notifier.stop()
        await redis.aclose()
        await writer_client.aclose()


async def merge(store: ProjectionStore, job_id: str, seq: int) -> None:
    batch = BatchFold()
    kind = "created" if seq == 1 else "stage"
    batch.add(fields_of(event(job_id=job_id, tenant_id=TENANT, seq=seq, kind=kind)))
    await store.merge_packed(*batch.packed())


async def test_reads_racing_writes_never_answer_a_state_older_than_one_announced(
    own_redis: LocalProcess, own_redis_client: Redis
) -> None:
    async with both_sides(own_redis.port) as sides:
        await race(sides, own_redis_client)


async def race(sides: Sides, own_redis_client: Redis) -> None:
    store, cache, reader = sides.store, sides.cache, sides.reader
    job_id = ulid()
    await merge(store, job_id, 1)
    writes = 400
    stale: list[tuple[int, int]] = []
    reads = 0

    async def read_forever() -> None:
        nonlocal reads
        while True:
            told = cache.told  # the read starts after this was announced to the api
            stored = await reader.read(TENANT, job_id)
            seq = stored_seq(stored.fields.get(_PUBLIC))
            reads += 1
            if seq < told:
                stale.append((seq, told))
            await asyncio.sleep(0)

    killed = []

    async def write_all() -> None:
        for seq in range(2, writes + 1):
            await merge(store, job_id, seq)
            await asyncio.sleep(0.002 if seq % 7 else 0)
            if seq in (150, 300):  # the subscriber's connection dies mid-race
                await told_of(seq)  # (the second time: once the api has a new one)
                killed.append(await own_redis_client.client_kill_filter(_type="pubsub"))
            if seq in (170, 320):  # written unannounced; now the api subscribes again
                await subscribed_again()

    async def subscribed_again() -> None:
        key = change_channel(DEFAULT_VERSION, TENANT, job_id)
        deadline = time.monotonic() + 10
        while cache.ticket(key) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def told_of(seq: int) -> None:
        deadline = time.monotonic() + 10
        while cache.told < seq and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    readers = [asyncio.create_task(read_forever()) for _ in range(8)]
    try:
        await write_all()
        await told_of(writes)
    finally:
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    final = await reader.read(TENANT, job_id)
    assert stale == [], f"{len(stale)} reads older than what the api was told: {stale[:5]}"
    assert killed == [1, 1]
    assert cache.told == writes, "every change reached the api, also after each kill"
    assert stored_seq(final.fields.get(_PUBLIC)) == writes
    assert cache.flushes >= 2, "each killed subscriber connection emptied the cache"
    assert cache.hits > reads // 2, (cache.hits, cache.misses, reads)


async def test_a_woken_long_poll_reads_the_announced_state_without_a_round_trip(
    own_redis: LocalProcess,
) -> None:
    async with both_sides(own_redis.port) as sides:
        job_id = ulid()
        await merge(sides.store, job_id, 1)
        channel = change_channel(DEFAULT_VERSION, TENANT, job_id)
        async with sides.notifier.watch(channel) as changed:
            await sides.reader.read(TENANT, job_id)  # fills the cache: the channel is confirmed
            before = len(sides.round_trips)
            await merge(sides.store, job_id, 2)
            await asyncio.wait_for(changed.wait(), 5)
            stored = await sides.reader.read(TENANT, job_id)
        assert stored_seq(stored.fields.get(_PUBLIC)) == 2
        assert len(sides.round_trips) == before, "answered from the announcement"
