"""The shared change subscriber keeps no waiter behind when a subscription fails."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.notifier import ChangeNotifier


class BrokenPubSub:
    async def ssubscribe(self, *channels: str) -> None:
        raise RedisConnectionError("redis away")

    async def sunsubscribe(self, *channels: str) -> None:
        return None


class FakeRedis:
    def pubsub(self) -> Any:
        return BrokenPubSub()


async def test_a_failed_subscribe_leaves_no_waiter_and_the_next_wait_subscribes_again() -> None:
    notifier = ChangeNotifier(FakeRedis())  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            async with notifier.watch("changed:v1:{t:j}"):
                pass
        assert notifier._waiters == {}
