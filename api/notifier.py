"""One shared change subscriber per process, for long-polling readers.

The projector announces a change of a job's head or public group on the job's channel
(SPUBLISH). Waiting requests register here; the process holds one pub/sub connection,
subscribed to exactly the channels someone waits on, and wakes their waiters. A waiter
never depends on a notification for correctness: it reads the job again when woken and
when its wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

log = logging.getLogger("api.notifier")

SUBSCRIBE_CONFIRM_SECONDS = 1.0


class ChangeNotifier:
    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._pubsub: Any = redis.pubsub()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="change-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
                    await self._pubsub.ssubscribe(channel)
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
                    with contextlib.suppress(Exception):
                        await self._pubsub.sunsubscribe(channel)

    async def _dispatch(self) -> None:
        while True:
            if not self._waiters:
                await asyncio.sleep(0.05)
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
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
