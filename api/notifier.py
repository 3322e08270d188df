"""One shared change subscriber per process, for long-polling readers.

The projector announces every change of a job, with the job's groups, on the job's channel
(SPUBLISH). Waiting requests register here, and the near cache (`api.near_cache`) asks for
the channels of hot jobs to be kept; the process subscribes (SSUBSCRIBE) to exactly those
channels, hands each announcement to the near cache and wakes the channel's waiters. A waiter
never depends on a notification for correctness: it reads the job again (from the near cache
when the announcement filled it) when woken and when its wait ends.

Sharded pub/sub delivers a message only on the node that owns the channel's slot. On one
server that is one pub/sub connection with one reader. On a Redis Cluster, redis-py's
`ClusterPubSub` subscribes each channel on its owner (one connection per node that has
subscriptions), and `get_sharded_message` reads them; each primary gets a reader of its own
that waits on its node only: a single reader taking the nodes in turn would wait out its read
timeout on a quiet node while another node's messages queue up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from api.near_cache import NearCache
from api.redis_client import LazyRedis, read_options
from contracts.job_state import split_groups
from contracts.redis_client import AnyRedis, connect_redis

log = logging.getLogger("api.notifier")

SUBSCRIBE_CONFIRM_SECONDS = 1.0
READ_SECONDS = 1.0  # one read's wait for a message; a reader checks its state in between
IDLE_SECONDS = 0.05  # a reader's pause while nobody waits on its server
RETRY_SECONDS = 0.5  # before a new connection, after one failed


class ChangeNotifier:
    def __init__(self, redis: LazyRedis | AnyRedis, cache: NearCache | None = None) -> None:
        self._redis = redis
        # The subscriber's own client (from `redis`'s URL): a connection that failed is never
        # reused, a new client makes a new one.
        self._client: AnyRedis | None = None
        self._pubsub: Any = None  # opened by the first subscription
        self._cluster: RedisCluster | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._kept: set[str] = set()  # channels the near cache keeps, waited on or not
        self._confirmed: dict[str, asyncio.Event] = {}
        # One reader per server: "" on a single server, the node's name on a cluster.
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._chores: set[asyncio.Task[None]] = set()  # keeps and releases under way
        self.cache = cache

    def keep(self, channel: str) -> None:
        """Subscribe `channel` for the near cache (in the background) until `release`."""
        self._chore(self._keep(channel))

    def release(self, channel: str) -> None:
        self._chore(self._release(channel))

    def _chore(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _keep(self, channel: str) -> None:
        try:
            async with self._lock:
                if channel in self._kept:
                    return
                self._kept.add(channel)
                if not self._waiters.get(channel):
                    self._confirmed[channel] = asyncio.Event()
                    await self._subscribe(channel)
        except Exception as error:  # Redis away: the job is read as if it were cold
            log.debug("keeping %s failed: %s", channel, type(error).__name__)
            await self._release(channel)
            if self.cache is not None:
                self.cache.not_kept(channel)

    async def _release(self, channel: str) -> None:
        async with self._lock:
            self._kept.discard(channel)
            await self._unsubscribe_unless_needed(channel)

    async def _unsubscribe_unless_needed(self, channel: str) -> None:
        """Under the lock: unsubscribe `channel` when nobody waits on it and it is not kept."""
        if self._waiters.get(channel) or channel in self._kept:
            return
        self._waiters.pop(channel, None)
        self._confirmed.pop(channel, None)
        if self.cache is not None:
            self.cache.unsubscribed(channel)  # before: no change would reach the cache
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.sunsubscribe(channel)

    async def stop(self) -> None:
        for chore in list(self._chores):
            chore.cancel()
        readers = list(self._readers.values())
        self._readers.clear()
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `channel` announces a change, from the moment this enters
        (the subscription is confirmed by the server first, so a read made after entering
        cannot miss a change)."""
        changed = asyncio.Event()
        try:  # from the first line: a failed subscribe must not leave a waiter behind
            async with self._lock:
                waiters = self._waiters.setdefault(channel, set())
                waiters.add(changed)
                if len(waiters) == 1 and channel not in self._kept:
                    confirmed = self._confirmed[channel] = asyncio.Event()
                    await self._subscribe(channel)
                else:
                    confirmed = self._confirmed.get(channel) or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_CONFIRM_SECONDS)
            yield changed
        finally:
            async with self._lock:
                self._waiters.get(channel, set()).discard(changed)
                await self._unsubscribe_unless_needed(channel)

    async def _subscribe(self, channel: str) -> None:
        """Under the lock. Without a subscriber connection (the first subscription, or the
        last connection failed), a new one subscribes every channel wanted, this one included."""
        if self._pubsub is None:
            await self._open()
        else:
            await self._pubsub.ssubscribe(channel)

    async def _open(self) -> None:
        """Under the lock: a new subscriber connection, subscribed to every channel someone
        waits on or the near cache keeps. redis-py's own reconnection is not relied on: after
        the server closed a subscriber connection it was seen failing every read that followed.
        """
        redis = self._redis
        if isinstance(redis, LazyRedis):
            redis = self._client = await connect_redis(redis.url, **read_options())
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        pubsub: Any = redis.pubsub()
        self._pubsub = pubsub
        try:
            for channel in {*self._waiters, *self._kept}:
                await pubsub.ssubscribe(channel)
        except BaseException:
            await self._close()
            raise
        if self._cluster is None:
            self._start_reader("", None)
        else:
            # Every primary, not only this channel's owner: when a slot moves, redis-py
            # subscribes its channels again on the new owner, which must be read as well.
            for node in self._cluster.get_primaries():
                self._start_reader(node.name, node)

    async def _renew(self, failed: Any) -> None:
        """A new subscriber connection in place of `failed` (None: of none), unless another
        reader renewed it first. Redis still away: tried again by the next round."""
        async with self._lock:
            if self._pubsub is not failed:
                return
            await self._close()
            if not (self._waiters or self._kept):
                return
            try:
                await self._open()
            except Exception as error:
                log.warning("change subscriber cannot subscribe yet: %s", type(error).__name__)

    async def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()

    def _start_reader(self, name: str, node: ClusterNode | None) -> None:
        if name not in self._readers:
            reader = self._read(node)
            self._readers[name] = asyncio.create_task(reader, name=f"change-notifier {name}")

    def _subscriptions(self, pubsub: Any, node: ClusterNode | None) -> Any:
        """The pub/sub connection a reader reads: the server's, or the node's (if any)."""
        if node is None:
            return pubsub
        return pubsub.node_pubsub_mapping.get(node.name)

    async def _read(self, node: ClusterNode | None) -> None:
        while True:
            pubsub = self._pubsub
            wanted = self._waiters or self._kept
            if pubsub is None:  # the last connection failed and Redis was still away
                await asyncio.sleep(RETRY_SECONDS if wanted else IDLE_SECONDS)
                if wanted:
                    await self._renew(None)
                continue
            subscriptions = self._subscriptions(pubsub, node)
            # `subscribed` stays true until every unsubscribe is confirmed: those are read too.
            if not wanted or subscriptions is None or not subscriptions.subscribed:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            try:
                if node is None:
                    message = await pubsub.get_message(timeout=READ_SECONDS)
                else:
                    message = await pubsub.get_sharded_message(
                        target_node=node, timeout=READ_SECONDS
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: waiters fall back to their deadline
                log.warning("change subscriber lost its connection: %s", type(error).__name__)
                if self.cache is not None:
                    self.cache.flush()  # changes may go unannounced until it is back
                await asyncio.sleep(RETRY_SECONDS)
                await self._renew(pubsub)
                continue
            if message is not None:
                self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind = message.get("type")
        if kind == "ssubscribe":
            if self.cache is not None and channel in self._confirmed:
                self.cache.subscribed(channel)
            if confirmed := self._confirmed.get(channel):
                confirmed.set()
        elif kind == "smessage":
            if self.cache is not None:
                data = message.get("data")
                fields = split_groups(data) if isinstance(data, bytes) else None
                self.cache.changed(channel, fields)
            for waiter in self._waiters.get(channel, ()):
                waiter.set()
