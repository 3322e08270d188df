"""One shared change subscriber per process, for long-polling readers.

The projector announces a change of a job's head or public group on the job's channel
(SPUBLISH). Waiting requests register here; the process subscribes (SSUBSCRIBE) to exactly
the channels someone waits on, and wakes their waiters. A waiter never depends on a
notification for correctness: it reads the job again when woken and when its wait ends.

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

from api.redis_client import LazyRedis
from contracts.redis_client import AnyRedis

log = logging.getLogger("api.notifier")

SUBSCRIBE_CONFIRM_SECONDS = 1.0
READ_SECONDS = 1.0  # one read's wait for a message; a reader checks its state in between
IDLE_SECONDS = 0.05  # a reader's pause while nobody waits on its server


class ChangeNotifier:
    def __init__(self, redis: LazyRedis | AnyRedis) -> None:
        self._redis = redis
        self._pubsub: Any = None  # opened by the first subscription
        self._cluster: RedisCluster | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        # One reader per server: "" on a single server, the node's name on a cluster.
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        readers = list(self._readers.values())
        self._readers.clear()
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

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
                if len(waiters) == 1:
                    confirmed = self._confirmed[channel] = asyncio.Event()
                    await self._subscribe(channel)
                else:
                    confirmed = self._confirmed.get(channel) or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_CONFIRM_SECONDS)
            yield changed
        finally:
            async with self._lock:
                waiters = self._waiters.get(channel, set())
                waiters.discard(changed)
                if not waiters:
                    self._waiters.pop(channel, None)
                    self._confirmed.pop(channel, None)
                    if self._pubsub is not None:
                        with contextlib.suppress(Exception):
                            await self._pubsub.sunsubscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        if self._pubsub is None:
            redis = self._redis
            if isinstance(redis, LazyRedis):
                redis = redis.client or await redis.connect()
            self._cluster = redis if isinstance(redis, RedisCluster) else None
            self._pubsub = redis.pubsub()
        await self._pubsub.ssubscribe(channel)
        if self._cluster is None:
            self._start_reader("", None)
        else:
            # Every primary, not only this channel's owner: when a slot moves, redis-py
            # subscribes its channels again on the new owner, which must be read as well.
            for node in self._cluster.get_primaries():
                self._start_reader(node.name, node)

    def _start_reader(self, name: str, node: ClusterNode | None) -> None:
        if name not in self._readers:
            reader = self._read(node)
            self._readers[name] = asyncio.create_task(reader, name=f"change-notifier {name}")

    def _subscriptions(self, node: ClusterNode | None) -> Any:
        """The pub/sub connection a reader reads: the server's, or the node's (if any)."""
        if node is None:
            return self._pubsub
        return self._pubsub.node_pubsub_mapping.get(node.name)

    async def _read(self, node: ClusterNode | None) -> None:
        while True:
            subscriptions = self._subscriptions(node)
            # `subscribed` stays true until every unsubscribe is confirmed: those are read too.
            if not self._waiters or subscriptions is None or not subscriptions.subscribed:
                await asyncio.sleep(IDLE_SECONDS)
                continue
            try:
                if node is None:
                    message = await self._pubsub.get_message(timeout=READ_SECONDS)
                else:
                    message = await self._pubsub.get_sharded_message(
                        target_node=node, timeout=READ_SECONDS
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: waiters fall back to their deadline
                log.warning("change subscriber lost its connection: %s", type(error).__name__)
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._deliver(message)

    def _deliver(self, message: dict[str, Any]) -> None:
        raw = message.get("channel")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind = message.get("type")
        if kind == "ssubscribe":
            if confirmed := self._confirmed.get(channel):
                confirmed.set()
        elif kind == "smessage":
            for waiter in self._waiters.get(channel, ()):
                waiter.set()
