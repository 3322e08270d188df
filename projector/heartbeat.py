"""A running projector says so in Redis: `projection:projector:<version>:<instance>`, set every
`BEAT_SECONDS` with a lifetime of `LIFETIME_SECONDS`, deleted on a clean stop.

The replay tools need to know whether a projector still writes a version (`drop` refuses it,
`promote` and `rollback` refuse a version nobody follows). Kafka's group membership does not
tell on every broker - the local broker keeps a stopped consumer listed for a minute or more -
and Redis is where the versions live anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time

from contracts.job_state import projector_key
from contracts.redis_client import AnyRedis

log = logging.getLogger("projector.heartbeat")

BEAT_SECONDS = 5.0
LIFETIME_SECONDS = 15


def instance_name() -> str:
    """The host (a pod's name on Kubernetes) and the process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Heartbeat:
    def __init__(self, redis: AnyRedis, version: str, group: str) -> None:
        self._redis = redis
        self._key = projector_key(version, instance_name())
        self._value = json.dumps(
            {"group": group, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="projector-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # Redis away: the key expires on its own
            await self._redis.delete(self._key)

    async def _beat(self) -> None:
        while True:
            try:
                await self._redis.set(self._key, self._value, ex=LIFETIME_SECONDS)
            except Exception as error:  # Redis away: the pipeline says so; keep beating
                log.debug("heartbeat not written: %s", type(error).__name__)
            await asyncio.sleep(BEAT_SECONDS)
